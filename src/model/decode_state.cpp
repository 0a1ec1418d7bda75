// The DecodeState: construction, size, the checks against a model, and snapshots (with the
// model identity they are tied to).
#include <fmt/format.h>
#include <zlib.h>

#include <cstring>
#include <utility>

#include "attention/mechanism.h"
#include "kernels/rng.h"
#include "model/config_fields.h"
#include "model/decode_state.h"
#include "util/atomic_file.h"
#include "util/memory.h"

namespace polysketch {

DecodeBudget::DecodeBudget(int64_t limit_bytes) : limit_(limit_bytes) {
  if (limit_bytes < 0) throw Error(fmt::format("a decoding budget must be >= 0 bytes, got {}", limit_bytes));
}

void DecodeBudget::charge(int64_t bytes, const char* what) {
  for (;;) {
    int64_t used = used_;
    while (used + bytes <= limit_)
      if (used_.compare_exchange_weak(used, used + bytes)) return;
    const int64_t missing = used + bytes - limit_;
    if (!on_exceeded || !on_exceeded(missing))
      throw Error(fmt::format("decoding memory budget exceeded: {} needs {:.2f} MiB, {:.2f} of the "
                              "budget's {:.2f} MiB are in use", what, bytes / 1048576.0,
                              used / 1048576.0, limit_ / 1048576.0));
  }
}

template <typename T>
DecodeStateT<T>::DecodeStateT(const ModelConfig& config, std::shared_ptr<DecodeBudget> budget)
    : max_bytes(static_cast<int64_t>(util::physical_memory_bytes() / 2)),
      config_(config),
      impl_(std::make_unique<Impl>()),
      budget_(std::move(budget)) {
  config_.validate();
  if (!config_.attention.causal)
    throw Error("decoding needs a causal model (this one was configured with causal=false)");
  impl_->heads.resize(static_cast<size_t>(config_.layers * config_.heads));
  for (auto& h : impl_->heads) attention::init_head_state(config_.attention, config_.head_dim(), h);
  charge(bytes(), "a new decoding state");
}

template <typename T>
DecodeStateT<T>::~DecodeStateT() {
  if (budget_) budget_->release(charged_);
}
template <typename T>
DecodeStateT<T>::DecodeStateT(const DecodeStateT& other)
    : max_bytes(other.max_bytes),
      prefill_chunk(other.prefill_chunk),
      config_(other.config_),
      position_(other.position_),
      impl_(std::make_unique<Impl>(*other.impl_)),
      budget_(other.budget_) {
  charge(other.charged_, "a copy of a decoding state");
}
template <typename T>
DecodeStateT<T>::DecodeStateT(DecodeStateT&& other) noexcept
    : max_bytes(other.max_bytes),
      prefill_chunk(other.prefill_chunk),
      config_(std::move(other.config_)),
      position_(other.position_),
      impl_(std::move(other.impl_)),
      budget_(std::move(other.budget_)),
      charged_(std::exchange(other.charged_, 0)) {}
template <typename T>
DecodeStateT<T>& DecodeStateT<T>::operator=(DecodeStateT&& other) noexcept {
  if (this == &other) return *this;
  if (budget_) budget_->release(charged_);
  max_bytes = other.max_bytes;
  prefill_chunk = other.prefill_chunk;
  config_ = std::move(other.config_);
  position_ = other.position_;
  impl_ = std::move(other.impl_);
  budget_ = std::move(other.budget_);
  charged_ = std::exchange(other.charged_, 0);
  return *this;
}

template <typename T>
void DecodeStateT<T>::charge(int64_t bytes, const char* what) {
  if (!budget_ || bytes == 0) return;
  budget_->charge(bytes, what);
  charged_ += bytes;
}

template <typename T>
int64_t DecodeStateT<T>::bytes() const {
  int64_t n = 0;
  for (const auto& h : impl_->heads)
    n += static_cast<int64_t>((h.z.size() + h.keys.size() + h.feats.size() + h.vals.size()) * sizeof(T));
  return n;
}

template <typename T>
const std::vector<T>& DecodeStateT<T>::last_logits() const {
  return impl_->logits;
}

template <typename T>
void check_decode_state(const ModelConfig& config, DecodeStateT<T>& state) {
  if (!model::same_config(state.config(), config))
    throw Error("this decoding state was made for a different model configuration");
}

template <typename T>
void check_kv_room(const ModelConfig& config, const DecodeStateT<T>& state, int64_t tokens) {
  if (attention::has_constant_state(config.attention.mechanism)) return;
  // keys and values of every layer and head: 2 x width values per token and layer
  const double grown = static_cast<double>(state.bytes()) +
                       2.0 * sizeof(T) * static_cast<double>(config.layers * config.width) * static_cast<double>(tokens);
  if (grown > static_cast<double>(state.max_bytes))
    throw Error(fmt::format("{} KV cache at position {} + {} tokens would need {:.1f} MiB, over its "
                            "limit of {:.1f} MiB (the sketch mechanisms decode in constant memory)",
                            mechanism_name(config.attention.mechanism), state.position(), tokens,
                            grown / 1048576.0, static_cast<double>(state.max_bytes) / 1048576.0));
}

template <typename T>
void reserve_kv(const ModelConfig& config, DecodeStateT<T>* const* states, int64_t count, int64_t tokens) {
  if (attention::has_constant_state(config.attention.mechanism)) return;
  const int64_t bytes = 2 * static_cast<int64_t>(sizeof(T)) * config.layers * config.width * tokens;
  for (int64_t b = 0; b < count; ++b) {
    check_kv_room(config, *states[b], tokens);
    try {
      DecodeAccess::charge(*states[b], bytes);
    } catch (...) {
      while (b-- > 0) DecodeAccess::refund(*states[b], bytes);
      throw;
    }
  }
}

// ---- snapshots ----------------------------------------------------------------------------
// Little-endian: "PSKSTATE", u32 version, u32 sizeof(T), u32 identity length + identity,
// i64 position, u64 heads, then per head: i64 count and four arrays (u64 length + values),
// and a CRC-32 of everything before it.
namespace {
constexpr char kMagic[8] = {'P', 'S', 'K', 'S', 'T', 'A', 'T', 'E'};
constexpr uint32_t kVersion = 1;

struct Writer {
  std::string out;
  template <typename U>
  void put(U v) { out.append(reinterpret_cast<const char*>(&v), sizeof(U)); }
  template <typename U>
  void array(const std::vector<U>& v) {
    put<uint64_t>(v.size());
    out.append(reinterpret_cast<const char*>(v.data()), v.size() * sizeof(U));
  }
};

struct Reader {
  const std::string& in;
  const std::string& where;
  size_t at = 0;
  void need(uint64_t bytes) {
    if (bytes > in.size() - at) throw Error(fmt::format("{}: truncated decoding state", where));
  }
  template <typename U>
  U get() {
    need(sizeof(U));
    U v;
    std::memcpy(&v, in.data() + at, sizeof(U));
    at += sizeof(U);
    return v;
  }
  template <typename U>
  void array(std::vector<U>& v, size_t expected, bool exact) {
    const uint64_t n = get<uint64_t>();
    if (exact ? n != expected : n > expected)
      throw Error(fmt::format("{}: a state tensor has {} values, the model needs {}{}", where, n,
                              exact ? "" : "at most ", expected));
    need(n * sizeof(U));
    v.resize(n);
    std::memcpy(v.data(), in.data() + at, n * sizeof(U));
    at += n * sizeof(U);
  }
};

uint32_t crc(const char* data, size_t n) {
  return static_cast<uint32_t>(crc32(crc32(0L, Z_NULL, 0), reinterpret_cast<const Bytef*>(data),
                                     static_cast<uInt>(n)));
}
}  // namespace

template <typename T>
void DecodeStateT<T>::save(const std::string& path, const std::string& model_identity) const {
  Writer w;
  w.out.append(kMagic, 8);
  w.put<uint32_t>(kVersion);
  w.put<uint32_t>(sizeof(T));
  w.put<uint32_t>(static_cast<uint32_t>(model_identity.size()));
  w.out += model_identity;
  w.put<int64_t>(position_);
  w.put<uint64_t>(impl_->heads.size());
  for (const auto& h : impl_->heads) {
    w.put<int64_t>(h.count);
    w.array(h.z);
    w.array(h.keys);
    w.array(h.feats);
    w.array(h.vals);
  }
  w.array(impl_->logits);
  w.put<uint32_t>(crc(w.out.data(), w.out.size()));
  util::write_file_atomic(path, w.out);
}

template <typename T>
DecodeStateT<T> DecodeStateT<T>::load(const std::string& path, const ModelConfig& config,
                                      const std::string& model_identity,
                                      std::shared_ptr<DecodeBudget> budget) {
  const std::string bytes = util::read_file(path);
  if (bytes.size() < 8 + 4 || std::memcmp(bytes.data(), kMagic, 8) != 0)
    throw Error(fmt::format("{}: not a polysketch decoding state (wrong magic)", path));
  uint32_t stored;
  std::memcpy(&stored, bytes.data() + bytes.size() - 4, 4);
  if (crc(bytes.data(), bytes.size() - 4) != stored)
    throw Error(fmt::format("{}: corrupt or truncated decoding state (checksum mismatch)", path));
  const std::string body = bytes.substr(0, bytes.size() - 4);
  Reader r{body, path};
  r.at = 8;
  if (const auto v = r.get<uint32_t>(); v != kVersion)
    throw Error(fmt::format("{}: unsupported decoding state version {}", path, v));
  if (r.get<uint32_t>() != sizeof(T)) throw Error(fmt::format("{}: decoding state of another precision", path));
  const uint32_t id_len = r.get<uint32_t>();
  r.need(id_len);
  const std::string id = body.substr(r.at, id_len);
  r.at += id_len;
  if (id != model_identity)
    throw Error(fmt::format("{}: this state was saved from another model (identity {}, this model "
                            "is {})",
                            path, id, model_identity));
  DecodeStateT s(config, std::move(budget));
  s.position_ = r.get<int64_t>();
  if (r.get<uint64_t>() != s.impl_->heads.size())
    throw Error(fmt::format("{}: head count does not match the model", path));
  const bool fixed = attention::has_constant_state(config.attention.mechanism);
  const int64_t h = config.head_dim();
  for (auto& head : s.impl_->heads) {
    const attention::HeadState<T> empty = head;
    head.count = r.get<int64_t>();
    const int64_t cap = fixed ? config.attention.block - 1 : s.position_;
    if (head.count < 0 || head.count > cap ||
        head.count != (fixed ? s.position_ % config.attention.block : s.position_))
      throw Error(fmt::format("{}: corrupt decoding state (row count {})", path, head.count));
    const auto rows = static_cast<size_t>(fixed ? 0 : head.count);
    r.array(head.z, empty.z.size(), true);
    r.array(head.keys, fixed ? empty.keys.size() : rows * h, true);
    r.array(head.feats, empty.feats.size(), true);
    r.array(head.vals, fixed ? empty.vals.size() : rows * h, true);
  }
  r.array(s.impl_->logits, s.position_ > 0 ? static_cast<size_t>(config.vocab) : 0, true);
  if (s.position_ < 0 || r.at != body.size())
    throw Error(fmt::format("{}: corrupt decoding state", path));
  s.charge(s.bytes() - s.charged_, "a loaded decoding state");
  return s;
}

template <typename T>
std::string ModelT<T>::identity() const {
  uint32_t w = static_cast<uint32_t>(crc32(0L, Z_NULL, 0));
  for (auto* p : params())
    w = static_cast<uint32_t>(crc32(w, reinterpret_cast<const Bytef*>(p->value.data()),
                                    static_cast<uInt>(p->value.size() * sizeof(T))));
  const std::string cfg = config_.to_json();
  return fmt::format("config-{:08x}-weights-{:08x}", crc(cfg.data(), cfg.size()), w);
}

void fill_synthetic_kv_cache(DecodeStateT<float>& s, int64_t n, uint64_t seed) {
  const auto& cfg = s.config();
  if (attention::has_constant_state(cfg.attention.mechanism) || s.position() != 0)
    throw Error("a synthetic KV cache needs an empty state of a softmax or polynomial model");
  kernels::Rng rng(seed);
  const int64_t hd = cfg.head_dim();
  for (auto& h : DecodeAccess::impl(s).heads) {
    h.keys.resize(static_cast<size_t>(n * hd));
    h.vals.resize(h.keys.size());
    for (auto& x : h.keys) x = static_cast<float>(rng.normal() * 0.5);
    for (auto& x : h.vals) x = static_cast<float>(rng.normal());
    h.count = n;
  }
  DecodeAccess::impl(s).logits.assign(static_cast<size_t>(cfg.vocab), 0.f);
  DecodeAccess::advance(s, n);
  DecodeAccess::charge(s, s.bytes());
}

template class DecodeStateT<float>;
template class DecodeStateT<double>;
template void check_decode_state<float>(const ModelConfig&, DecodeStateT<float>&);
template void check_decode_state<double>(const ModelConfig&, DecodeStateT<double>&);
template void check_kv_room<float>(const ModelConfig&, const DecodeStateT<float>&, int64_t);
template void check_kv_room<double>(const ModelConfig&, const DecodeStateT<double>&, int64_t);
template void reserve_kv<float>(const ModelConfig&, DecodeStateT<float>* const*, int64_t, int64_t);
template void reserve_kv<double>(const ModelConfig&, DecodeStateT<double>* const*, int64_t, int64_t);
template std::string ModelT<float>::identity() const;
template std::string ModelT<double>::identity() const;

}  // namespace polysketch
