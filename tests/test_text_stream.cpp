// Streamed text is never broken UTF-8: utf8_continues against the set of all prefixes of every
// code point's encoding; TextStream holds back an incomplete character and masks byte pieces
// that cannot continue one (sampling under the mask: tests/test_sampling.cpp); a random (untrained)
// model, which draws byte pieces often, streams only valid UTF-8 under the mask and does not
// without it (so the end-to-end check can fail).
#include <gtest/gtest.h>

#include <map>
#include <string>

#include "data/corpus.h"
#include "data/text_stream.h"
#include "data/tokenizer.h"
#include "kernels/rng.h"
#include "model/generator.h"
#include "polysketch/decode.h"
#include "polysketch/model.h"
#include "test_util.h"
#include "tiny_config.h"

namespace polysketch::test {
namespace {

std::string encode_utf8(uint32_t c) {
  std::string s;
  if (c < 0x80) {
    s += static_cast<char>(c);
  } else if (c < 0x800) {
    s += static_cast<char>(0xC0 | (c >> 6));
    s += static_cast<char>(0x80 | (c & 0x3F));
  } else if (c < 0x10000) {
    s += static_cast<char>(0xE0 | (c >> 12));
    s += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (c & 0x3F));
  } else {
    s += static_cast<char>(0xF0 | (c >> 18));
    s += static_cast<char>(0x80 | ((c >> 12) & 0x3F));
    s += static_cast<char>(0x80 | ((c >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (c & 0x3F));
  }
  return s;
}

// Whether s is valid UTF-8 (NUL included, which check_utf8 refuses in a corpus) with no U+FFFD
// (it appears where bytes were replaced).
bool clean_utf8(const std::string& s) {
  std::vector<uint8_t> held;
  for (unsigned char b : s) {
    bool complete = false;
    if (!data::utf8_continues(held, b, &complete)) return false;
    held.push_back(b);
    if (complete) held.clear();
  }
  return held.empty() && s.find("\xEF\xBF\xBD") == std::string::npos;
}

TEST(Utf8, ContinuesExactlyThePrefixesOfValidEncodings) {
  std::map<std::string, bool> prefixes;  // every proper prefix (false) and whole encoding (true)
  for (uint32_t c = 0; c <= 0x10FFFF; ++c) {
    if (c >= 0xD800 && c <= 0xDFFF) continue;  // surrogates are not characters
    const std::string e = encode_utf8(c);
    for (size_t len = 1; len < e.size(); ++len) prefixes.emplace(e.substr(0, len), false);
    prefixes[e] = true;
  }
  std::vector<std::string> starts{""};
  for (const auto& [p, whole] : prefixes)
    if (!whole) starts.push_back(p);
  int64_t checked = 0;
  for (const auto& p : starts) {
    const std::vector<uint8_t> prefix(p.begin(), p.end());
    for (int b = 0; b < 256; ++b) {
      const auto it = prefixes.find(p + static_cast<char>(b));
      bool complete = false;
      const bool ok = data::utf8_continues(prefix, static_cast<uint8_t>(b), &complete);
      ASSERT_EQ(ok, it != prefixes.end()) << "prefix of " << p.size() << " bytes, byte " << b;
      if (ok) {
        ASSERT_EQ(complete, it->second) << "byte " << b;
      }
      ++checked;
    }
  }
  EXPECT_GT(checked, 256 * 1000);
}

data::Tokenizer ascii_tokenizer() {
  return data::Tokenizer::from_bytes(data::Tokenizer::train(sample_lines(400), 300), "t");
}

int32_t byte_id(const std::vector<int16_t>& bytes, int b) {
  for (size_t id = 0; id < bytes.size(); ++id)
    if (bytes[id] == b) return static_cast<int32_t>(id);
  return -1;
}

TEST(TextStream, HoldsBackAnIncompleteCharacterAndMasksWhatCannotContinueIt) {
  const auto tok = ascii_tokenizer();
  const auto bytes = tok.byte_pieces();
  ASSERT_EQ(std::count_if(bytes.begin(), bytes.end(), [](int16_t b) { return b >= 0; }), 256);
  const auto prompt = tok.encode("In the");
  data::TextStream text(tok, prompt);
  EXPECT_EQ(text.shown(), "In the");
  const int32_t word = tok.encode(" beginning").back();
  // Nothing held: ordinary pieces, ASCII and lead bytes are allowed; bytes no character starts with are not.
  EXPECT_TRUE(text.allowed()[word]);
  for (int b : {0x0A, 0x41, 0xC2, 0xE0, 0xF4}) EXPECT_TRUE(text.allowed()[byte_id(bytes, b)]) << b;
  for (int b : {0x80, 0xBF, 0xC0, 0xC1, 0xF5, 0xFF}) EXPECT_FALSE(text.allowed()[byte_id(bytes, b)]) << b;
  // " é" as bytes: the lead byte is held back, then the character appears whole.
  EXPECT_EQ(text.push(byte_id(bytes, ' ')), " ");
  EXPECT_EQ(text.push(byte_id(bytes, 0xC3)), "");
  EXPECT_EQ(text.held(), 1);
  EXPECT_FALSE(text.allowed()[word]);  // only a continuation byte may come now
  EXPECT_FALSE(text.allowed()[byte_id(bytes, 0x41)]);
  EXPECT_TRUE(text.allowed()[byte_id(bytes, 0xA9)]);
  EXPECT_EQ(text.push(byte_id(bytes, 0xA9)), "é");
  EXPECT_EQ(text.held(), 0);
  // A 4-byte character (U+1F600), its second byte restricted (F0 80 would be overlong).
  EXPECT_EQ(text.push(byte_id(bytes, 0xF0)), "");
  EXPECT_FALSE(text.allowed()[byte_id(bytes, 0x80)]);
  EXPECT_EQ(text.push(byte_id(bytes, 0x9F)), "");
  EXPECT_EQ(text.push(byte_id(bytes, 0x98)), "");
  EXPECT_EQ(text.push(byte_id(bytes, 0x80)), "\xF0\x9F\x98\x80");
  EXPECT_EQ(text.shown(), "In the é\xF0\x9F\x98\x80");
  // Unmasked input that breaks a character: shown as the tokenizer decodes it, not lost.
  text.push(byte_id(bytes, 0xE2));
  EXPECT_FALSE(text.push(word).empty());
  EXPECT_NE(text.shown().find("\xEF\xBF\xBD"), std::string::npos);
  // A prompt that ends inside a character: held back from the start.
  data::TextStream cut(tok, {byte_id(bytes, 'a'), byte_id(bytes, 0xE2), byte_id(bytes, 0x82)});
  EXPECT_EQ(cut.shown(), "a");
  EXPECT_EQ(cut.held(), 2);
  EXPECT_EQ(cut.push(byte_id(bytes, 0xAC)), "€");
}

TEST(TextStream, AnUntrainedModelStreamsOnlyValidUtf8UnderTheMask) {
  const auto tok = ascii_tokenizer();
  ModelConfig cfg = tiny_config(Mechanism::polysketch, 64, 8);
  cfg.vocab = tok.vocab_size();
  cfg.layers = 1;
  Model model(cfg);
  const auto prompt = tok.encode("And God said");
  std::string streamed;
  int held_at_least_once = 0;
  {
    DecodeState state(cfg);
    model::Generator gen(model, state, {1.5, 0, 1.0, 7});
    gen.prompt(prompt);
    data::TextStream text(tok, prompt);
    for (int i = 0; i < 600; ++i) {
      streamed += text.push(gen.next(text.allowed()));
      held_at_least_once += text.held() > 0;
    }
    EXPECT_EQ(text.shown(), "And God said" + streamed);
  }
  EXPECT_TRUE(clean_utf8(streamed)) << streamed;
  EXPECT_GT(held_at_least_once, 0) << "the model never drew a multi-byte character: nothing tested";
  // Without the mask the same model breaks characters (the check above can fail).
  DecodeState state(cfg);
  model::Generator gen(model, state, {1.5, 0, 1.0, 7});
  gen.prompt(prompt);
  std::vector<int32_t> ids = prompt;
  for (int i = 0; i < 600; ++i) ids.push_back(gen.next());
  EXPECT_FALSE(clean_utf8(tok.decode(ids)));

  // The end token ends the text: drawn, ended() says so; another token, not.
  EXPECT_FALSE(gen.ended());  // no end token
  auto first_greedy = [&](int32_t end_token, bool* ended) {
    DecodeState st(cfg);
    model::Generator g(model, st, {0, 0, 1.0, 7}, end_token);
    g.prompt(prompt);
    const int32_t id = g.next();
    *ended = g.ended();
    return id;
  };
  bool ended = true;
  const int32_t first = first_greedy(-1, &ended);
  EXPECT_FALSE(ended);
  EXPECT_EQ(first_greedy(first + 1, &ended), first);
  EXPECT_FALSE(ended);
  EXPECT_EQ(first_greedy(first, &ended), first);
  EXPECT_TRUE(ended);
}

}  // namespace
}  // namespace polysketch::test
