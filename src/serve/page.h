// The web page `polysketch serve` answers at GET /: built into the binary (no CDN, nothing
// downloaded). A prompt, sampling settings, the streamed output with tokens/s and the state
// size, and the sessions (continue, fork, regenerate the last answer, delete).
#pragma once

namespace polysketch::serve {

inline constexpr const char* kPage = R"HTML(<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>polysketch serve</title>
<style>
body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
textarea{width:100%;height:7rem;font:inherit}#out{white-space:pre-wrap;border:1px solid #ccc;padding:.7rem;min-height:6rem}
label{margin-right:1rem}input[type=number]{width:5rem}.muted{color:#777;font-size:.9rem}#out .new{background:#eef6ff}
</style></head><body>
<h1>polysketch serve</h1>
<p class="muted" id="model"></p>
<textarea id="prompt">And God said</textarea>
<p><label>max tokens <input id="max" type="number" value="100" min="1"></label>
<label>temperature <input id="temp" type="number" value="0.8" step="0.1" min="0"></label>
<label>session <input id="session" placeholder="(none)" size="12"></label>
<button id="go">Generate</button> <button id="again">Regenerate</button> <button id="stop">Stop</button></p>
<div id="out"></div>
<p class="muted" id="stats"></p>
<h2>Sessions</h2><ul id="sessions"></ul>
<script>
const $ = id => document.getElementById(id);
let controller = null, last = null, busy = false;
const mib = b => (b / 1048576).toFixed(2) + ' MiB';
async function models() {
  const r = await fetch('/v1/models'); const j = await r.json();
  $('model').textContent = j.data.map(m => `${m.id}: ${m.mechanism}, context ${m.context}`).join(', ');
}
async function sessions() {
  const r = await fetch('/v1/sessions'); const j = await r.json();
  $('sessions').innerHTML = '';
  for (const s of j.data) {
    const li = document.createElement('li'); li.dataset.id = s.id;
    li.append(`${s.id}: ${s.position < 0 ? 'on disk' : s.position + ' tokens'}, state ${mib(s.bytes)} `);
    const button = (label, f) => { const b = document.createElement('button'); b.textContent = label; b.onclick = f; li.append(b, ' '); };
    button('continue', () => { $('session').value = s.id; $('prompt').value = ''; });
    button('fork', async () => {
      const id = s.id + '-' + Math.random().toString(36).slice(2, 6);
      await fetch(`/v1/sessions/${s.id}/fork`, {method: 'POST', body: JSON.stringify({id})}); sessions();
    });
    button('delete', async () => { await fetch('/v1/sessions/' + s.id, {method: 'DELETE'}); sessions(); });
    $('sessions').append(li);
  }
}
// Streams a completion into the page: the prompt (or, in a session, only the new text) and the
// answer; the stats line shows tokens, tokens/s, time to first token and the state's size.
async function generate(prompt, session) {
  if (busy) return; busy = true;
  last = {prompt, session}; controller = new AbortController();
  const out = $('out'); out.textContent = prompt;
  const answer = document.createElement('span'); answer.className = 'new'; out.append(answer);
  const body = {prompt, max_tokens: +$('max').value, temperature: +$('temp').value, stream: true,
                stream_options: {include_usage: true}};
  if (session) body.session = session;
  const t0 = performance.now(); let n = 0, first = 0;
  try {
    const r = await fetch('/v1/completions', {method: 'POST', body: JSON.stringify(body), signal: controller.signal});
    if (!r.ok) { answer.textContent = '[' + (await r.json()).error.message + ']'; return; }
    const reader = r.body.getReader(), dec = new TextDecoder(); let buf = '';
    for (;;) {
      const {value, done} = await reader.read(); if (done) break;
      buf += dec.decode(value, {stream: true});
      let i;
      while ((i = buf.indexOf('\n\n')) >= 0) {
        const line = buf.slice(0, i); buf = buf.slice(i + 2);
        if (!line.startsWith('data: ') || line === 'data: [DONE]') continue;
        const j = JSON.parse(line.slice(6));
        if (j.error) { answer.textContent += ' [' + j.error.message + ']'; continue; }
        if (j.usage) continue;
        const c = j.choices[0]; answer.textContent += c.text; n += c.tokens.length;
        if (n && !first) first = performance.now() - t0;
        const s = (performance.now() - t0 - first) / 1000;
        $('stats').textContent = `${n} tokens, ${s > 0 ? ((n - 1) / s).toFixed(1) : '-'} tokens/s, first token after ${first.toFixed(0)} ms`;
      }
    }
  } finally {
    busy = false;
    if (session) {
      const s = await (await fetch('/v1/sessions/' + session)).json();
      $('stats').textContent += `; session ${session}: ${s.position} tokens in a state of ${mib(s.bytes)}`;
    }
    await sessions();
    $('stats').dataset.done = 'yes';  // (the browser test waits for it)
  }
}
$('go').onclick = () => { $('stats').dataset.done = ''; generate($('prompt').value, $('session').value); };
// Regenerate: in a session, its state goes back to before the last answer first.
$('again').onclick = async () => {
  if (!last || busy) return;
  $('stats').dataset.done = '';
  if (last.session) await fetch(`/v1/sessions/${last.session}/rollback`, {method: 'POST', body: '{}'});
  generate(last.prompt, last.session);
};
$('stop').onclick = () => controller && controller.abort();
models(); sessions();
</script></body></html>
)HTML";

}  // namespace polysketch::serve
