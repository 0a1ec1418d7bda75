// The web page `polysketch serve` answers at GET /: built into the binary (no CDN, nothing
// downloaded). A prompt, sampling settings, the streamed output with tokens/s, and the sessions
// (continue one, or delete it).
#pragma once

namespace polysketch::serve {

inline constexpr const char* kPage = R"HTML(<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>polysketch serve</title>
<style>
body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}
textarea{width:100%;height:7rem;font:inherit}#out{white-space:pre-wrap;border:1px solid #ccc;padding:.7rem;min-height:6rem}
label{margin-right:1rem}input[type=number]{width:5rem}.muted{color:#777;font-size:.9rem}
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
let controller = null, lastPrompt = null;
async function models() {
  const r = await fetch('/v1/models'); const j = await r.json();
  $('model').textContent = j.data.map(m => `${m.id}: ${m.mechanism}, context ${m.context}`).join(', ');
}
async function sessions() {
  const r = await fetch('/v1/sessions'); const j = await r.json();
  $('sessions').innerHTML = '';
  for (const s of j.data) {
    const li = document.createElement('li');
    li.textContent = `${s.id}: ${s.position} tokens, state ${(s.bytes / 1048576).toFixed(2)} MiB `;
    const use = document.createElement('button'); use.textContent = 'continue';
    use.onclick = () => { $('session').value = s.id; $('prompt').value = ''; };
    const del = document.createElement('button'); del.textContent = 'delete';
    del.onclick = async () => { await fetch('/v1/sessions/' + s.id, {method: 'DELETE'}); sessions(); };
    li.append(use, del); $('sessions').append(li);
  }
}
async function generate(prompt) {
  lastPrompt = prompt; $('out').textContent = prompt; controller = new AbortController();
  const body = {prompt, max_tokens: +$('max').value, temperature: +$('temp').value, stream: true};
  if ($('session').value) body.session = $('session').value;
  const t0 = performance.now(); let n = 0;
  const r = await fetch('/v1/completions', {method: 'POST', body: JSON.stringify(body), signal: controller.signal});
  if (!r.ok) { $('out').textContent = (await r.json()).error.message; return; }
  const reader = r.body.getReader(), dec = new TextDecoder(); let buf = '';
  for (;;) {
    const {value, done} = await reader.read(); if (done) break;
    buf += dec.decode(value, {stream: true});
    let i;
    while ((i = buf.indexOf('\n\n')) >= 0) {
      const line = buf.slice(0, i); buf = buf.slice(i + 2);
      if (!line.startsWith('data: ') || line === 'data: [DONE]') continue;
      const j = JSON.parse(line.slice(6));
      if (j.error) { $('out').textContent += '\n[' + j.error.message + ']'; continue; }
      $('out').textContent += j.choices[0].text; n++;
      $('stats').textContent = `${n} chunks, ${(n / ((performance.now() - t0) / 1000)).toFixed(1)} chunks/s`;
    }
  }
  sessions();
}
$('go').onclick = () => generate($('prompt').value);
$('again').onclick = () => { if (lastPrompt !== null) generate(lastPrompt); };
$('stop').onclick = () => controller && controller.abort();
models(); sessions();
</script></body></html>
)HTML";

}  // namespace polysketch::serve
