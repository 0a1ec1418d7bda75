// polysketch._core: the C++ library for Python (pybind11). Thin: argument checking and dtype
// dispatch live in python/polysketch/*.py; here, arrays are passed without copies and the GIL is
// released while the library computes. polysketch::Error becomes ValueError.
#include <malloc.h>
#include <pthread.h>
#include <omp.h>
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <atomic>
#include <csignal>
#include <memory>
#include <mutex>
#include <optional>

#include "data/shards.h"
#include "data/text_stream.h"
#include "data/tokenizer.h"
#include "kernels/gemm.h"
#include "model/checkpoint.h"
#include "model/generator.h"
#include "polysketch/attention.h"
#include "polysketch/decode.h"
#include "polysketch/model.h"

namespace py = pybind11;
using namespace polysketch;

namespace {

// Threads for our calls: polysketch.set_num_threads(n), 0 = every core. Applied around each call
// and restored after it, so that torch (which sets OpenMP's thread count at import, often to the
// physical core count) and this library do not change each other's setting.
int g_threads = 0;

//
// While a call computes, asynchronous signals (Ctrl-C's SIGINT among them) are blocked on the
// calling thread and on OpenMP's threads, and arrive when it returns (KeyboardInterrupt as usual):
// a handler run inside the computation would put its signal frame where Debian's oneDNN JIT sgemm
// has pointed rsp, at the heap (oneDNN issue #4845; src/train/stop_signals.h).
class ThreadScope {
 public:
  ThreadScope() : saved_(omp_get_max_threads()) {
    const sigset_t set = async_signals();
    pthread_sigmask(SIG_BLOCK, &set, &saved_mask_);
    const int t = g_threads > 0 ? g_threads : omp_get_num_procs();
    apply(t);
    static std::atomic<int> shielded{0};  // OpenMP's threads keep the mask: once per team size
    if (t > shielded) {
#pragma omp parallel num_threads(t)
      pthread_sigmask(SIG_BLOCK, &set, nullptr);
      shielded = t;
    }
  }
  ~ThreadScope() {
    apply(saved_);
    pthread_sigmask(SIG_SETMASK, &saved_mask_, nullptr);
  }

 private:
  static sigset_t async_signals() {
    sigset_t set;
    sigfillset(&set);
    for (int s : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGTRAP, SIGSYS})  // synchronous
      sigdelset(&set, s);
    return set;
  }
  static void apply(int t) {
    omp_set_num_threads(t);
    kernels::set_blas_threads(t);
  }
  int saved_;
  sigset_t saved_mask_;
};

// The module's compute context: f32, on the GEMM backend this machine runs best (measured once,
// on the first model or attention built, outside any parallel region, with every core).
const ComputeContext& compute_context() {
  static const ComputeContext ctx = [] {
    ThreadScope threads;
    return make_compute_context(Precision::f32);
  }();
  return ctx;
}

template <typename T>
using Array = py::array_t<T, py::array::c_style>;  // the Python side passes C-contiguous arrays

template <typename T>
Array<T> new_array(const std::vector<py::ssize_t>& shape) {
  return Array<T>(shape);
}

template <typename T>
Array<T> to_array(const std::vector<T>& v, const std::vector<int64_t>& shape) {
  Array<T> a(std::vector<py::ssize_t>(shape.begin(), shape.end()));
  std::copy(v.begin(), v.end(), a.mutable_data());
  return a;
}

// documents: None, or document ids [batch, n] (int32, C-contiguous: the Python side converts).
AttentionShape shape_of(const py::array& q, const py::array& v, const py::object& documents) {
  if (q.ndim() != 4 || v.ndim() != 4) throw Error("q, k, v must be [batch, heads, n, dim]");
  AttentionShape s{q.shape(0), q.shape(1), q.shape(2), q.shape(3), v.shape(3)};
  if (documents.is_none()) return s;
  const auto ids = documents.cast<py::array_t<int32_t, py::array::c_style>>();
  if (ids.ndim() != 2 || ids.shape(0) != s.batch || ids.shape(1) != s.n)
    throw Error("documents must be [batch, n] = [" + std::to_string(s.batch) + ", " + std::to_string(s.n) + "]");
  s.segments = ids.data();
  return s;
}

// One mechanism with its parameters; the parameter values are set from the caller's tensors
// before each call (the Python module owns them as torch Parameters).
template <typename T>
class PyAttention {
 public:
  PyAttention(const std::string& mechanism, bool causal, int p, int r, int block,
              const std::string& sketch, uint64_t seed, int layer, int threads, int64_t head_dim,
              int64_t value_dim)
      : att_(make_config(mechanism, causal, p, r, block, sketch, seed, layer, threads), head_dim, value_dim,
             compute_context()) {}

  py::list params() const {
    py::list out;
    for (const auto& p : att_.params()) out.append(py::make_tuple(p.name, to_array(p.value, p.shape)));
    return out;
  }

  // forward(q, k, v, params, keep, documents) -> (out, saved or None)
  py::tuple forward(const Array<T>& q, const Array<T>& k, const Array<T>& v, const py::list& params,
                    bool keep, const py::object& documents) {
    const auto s = shape_of(q, v, documents);
    auto out = new_array<T>({s.batch, s.heads, s.n, s.value_dim});
    auto saved = keep ? std::make_unique<AttentionSaved<T>>() : nullptr;
    {
      std::lock_guard<std::mutex> lock(mutex_);  // parameters are per call: one call at a time
      set_params(params);
      T* o = out.mutable_data();
      py::gil_scoped_release release;
      ThreadScope threads;
      att_.forward(s, q.data(), k.data(), v.data(), o, saved.get());
    }
    return py::make_tuple(out, saved ? py::cast(std::move(*saved)) : py::none());
  }

  // backward(q, k, v, out, dout, saved, params, documents) -> (dq, dk, dv, [dparam...])
  py::tuple backward(const Array<T>& q, const Array<T>& k, const Array<T>& v, const Array<T>& out,
                     const Array<T>& dout, const AttentionSaved<T>& saved, const py::list& params,
                     const py::object& documents) {
    const auto s = shape_of(q, v, documents);
    auto dq = new_array<T>({s.batch, s.heads, s.n, s.head_dim});
    auto dk = new_array<T>({s.batch, s.heads, s.n, s.head_dim});
    auto dv = new_array<T>({s.batch, s.heads, s.n, s.value_dim});
    std::vector<std::vector<T>> grads;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      set_params(params);
      grads = att_.zero_grads();
      T *pq = dq.mutable_data(), *pk = dk.mutable_data(), *pv = dv.mutable_data();
      py::gil_scoped_release release;
      ThreadScope threads;
      att_.backward(s, q.data(), k.data(), v.data(), out.data(), dout.data(), saved, pq, pk, pv,
                    grads.empty() ? nullptr : &grads);
    }
    py::list dparams;
    for (size_t i = 0; i < grads.size(); ++i) dparams.append(to_array(grads[i], att_.params()[i].shape));
    return py::make_tuple(dq, dk, dv, dparams);
  }

 private:
  static AttentionConfig make_config(const std::string& mechanism, bool causal, int p, int r,
                                     int block, const std::string& sketch, uint64_t seed, int layer,
                                     int threads) {
    AttentionConfig c;
    c.mechanism = parse_mechanism(mechanism);
    c.causal = causal;
    c.p = p;
    c.r = r;
    c.block = block;
    c.sketch = parse_sketch_type(sketch);
    c.seed = seed;
    c.layer = layer;
    c.threads = threads;
    return c;
  }

  void set_params(const py::list& params) {
    auto& ps = att_.params();
    if (params.size() != ps.size())
      throw Error("expected " + std::to_string(ps.size()) + " parameter arrays, got " +
                  std::to_string(params.size()));
    for (size_t i = 0; i < ps.size(); ++i) {
      const auto a = params[i].cast<Array<T>>();
      if (static_cast<size_t>(a.size()) != ps[i].value.size())
        throw Error("parameter '" + ps[i].name + "' has " + std::to_string(a.size()) +
                    " values, expected " + std::to_string(ps[i].value.size()));
      std::copy(a.data(), a.data() + a.size(), ps[i].value.begin());
    }
  }

  AttentionT<T> att_;
  std::mutex mutex_;
};

template <typename T>
void bind_attention(py::module_& m, const char* name) {
  py::class_<AttentionSaved<T>>(m, (std::string(name) + "Saved").c_str());
  py::class_<PyAttention<T>>(m, name)
      .def(py::init<const std::string&, bool, int, int, int, const std::string&, uint64_t, int, int,
                    int64_t, int64_t>())
      .def("params", &PyAttention<T>::params)
      .def("forward", &PyAttention<T>::forward)
      .def("backward", &PyAttention<T>::backward);
}

// A trained model with its tokenizer, from a checkpoint directory (or run directory).
class PyModel {
 public:
  explicit PyModel(const std::string& checkpoint) : ck_(model::read_checkpoint(checkpoint)) {
    auto loaded = std::make_unique<Model>(ck_.config, compute_context());
    model::load_weights(*loaded, ck_.weights, ck_.dir + "/model.safetensors");
    loaded->prepare_decoding();  // as `polysketch generate` decodes (the same tokens, faster)
    model_ = std::move(loaded);  // const from here: calls from several threads need no lock
    if (!ck_.tokenizer_bytes.empty())
      tokenizer_ = std::make_unique<data::Tokenizer>(
          data::Tokenizer::from_bytes(ck_.tokenizer_bytes, ck_.dir + "/tokenizer.model"));
  }
  std::string config_json() const { return ck_.config.to_json(); }
  std::string dir() const { return ck_.dir; }
  bool has_tokenizer() const { return tokenizer_ != nullptr; }
  const data::Tokenizer& tokenizer() const {
    if (!tokenizer_) throw Error(ck_.dir + " has no tokenizer (a synthetic task's model)");
    return *tokenizer_;
  }
  const Model& model() const { return *model_; }

  Array<float> logits(const Array<int32_t>& tokens) {
    if (tokens.ndim() != 2) throw Error("tokens must be [batch, len]");
    const int64_t b = tokens.shape(0), len = tokens.shape(1), v = ck_.config.vocab;
    if (b < 1 || len < 1) throw Error("tokens must hold at least one token");
    std::vector<float> out;
    {
      py::gil_scoped_release release;
      ThreadScope threads;
      out = model_->logits(tokens.data(), b, len);
    }
    auto a = new_array<float>({b, len, v});
    std::copy(out.begin(), out.end(), a.mutable_data());
    return a;
  }

 private:
  model::Checkpoint ck_;
  std::unique_ptr<const Model> model_;
  std::unique_ptr<data::Tokenizer> tokenizer_;
};

// One generation: its own decoding state on the shared, const model (generators on several
// threads run at once). With `text`,
// tokens are drawn as `polysketch generate` draws them (data::TextStream's mask) and next_text()
// streams the text; without, next() draws from the model's distribution unmasked.
class PyGenerator {
 public:
  PyGenerator(PyModel& model, const std::vector<int32_t>& prompt, double temperature, int64_t top_k,
              double top_p, uint64_t seed, bool text)
      : state_(model.model().config()),
        gen_(model.model(), state_, model::SamplingOptions{temperature, top_k, top_p, seed},
             model.has_tokenizer() ? model.tokenizer().end_of_document() : -1) {
    if (text) text_.emplace(model.tokenizer(), prompt);
    py::gil_scoped_release release;
    ThreadScope threads;
    gen_.prompt(prompt);
  }
  int32_t next() {
    py::gil_scoped_release release;
    ThreadScope threads;
    return gen_.next(text_ ? text_->allowed() : std::vector<uint8_t>{});
  }
  // Whether the last token drawn was the tokenizer's end-of-document token.
  bool ended() const { return gen_.ended(); }
  // The text the next token adds (maybe empty: an incomplete character is held back).
  std::string next_text() {
    if (!text_) throw Error("next_text: this generator was made for token ids");
    const int32_t id = next();
    return text_->push(id);
  }
  int64_t position() const { return state_.position(); }

 private:
  DecodeState state_;
  model::Generator gen_;
  std::optional<data::TextStream> text_;
};

}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "polysketch C++ core (use the polysketch package, not this module)";
  // Each call returns fresh arrays (outputs, gradients: 12.6 MB each at n = 4096, 12 heads):
  // glibc serves such blocks with mmap and unmaps them when freed, so every call paid page faults
  // on ~50 MB, 20% of a polysketch forward + backward. Blocks up to glibc's limit (32 MB) now come
  // from the heap and are reused; the heap is trimmed only beyond 512 MB of free top memory.
  mallopt(M_MMAP_THRESHOLD, 32 << 20);
  mallopt(M_TRIM_THRESHOLD, 512 << 20);
  py::register_exception<Error>(m, "Error", PyExc_ValueError);
  bind_attention<float>(m, "AttentionF32");
  bind_attention<double>(m, "AttentionF64");
  m.def("mechanisms", [] {
    std::vector<std::string> names;
    for (auto mech : all_mechanisms()) names.push_back(mechanism_name(mech));
    return names;
  });
  m.def("set_num_threads", [](int threads) {
    if (threads < 0 || threads > 4096) throw Error("threads must be 0 (all cores) to 4096");
    g_threads = threads;
  });
  m.def("get_num_threads", [] { return g_threads > 0 ? g_threads : omp_get_num_procs(); });
  m.def("read_shard", [](const std::string& path) {
    const auto tokens = data::read_shard(path);
    return to_array(tokens, {static_cast<int64_t>(tokens.size())});
  });
  py::class_<data::Tokenizer>(m, "Tokenizer")
      .def(py::init([](const std::string& path) { return data::Tokenizer::from_file(path); }))
      .def("encode", &data::Tokenizer::encode)
      .def("decode", &data::Tokenizer::decode)
      .def_property_readonly("vocab_size", &data::Tokenizer::vocab_size);
  py::class_<PyModel>(m, "Model")
      .def(py::init<const std::string&>())
      .def("config_json", &PyModel::config_json)
      .def_property_readonly("dir", &PyModel::dir)
      .def_property_readonly("has_tokenizer", &PyModel::has_tokenizer)
      .def("tokenizer", &PyModel::tokenizer, py::return_value_policy::reference_internal)
      .def("logits", &PyModel::logits);
  py::class_<PyGenerator>(m, "Generator")
      .def(py::init<PyModel&, const std::vector<int32_t>&, double, int64_t, double, uint64_t, bool>(),
           py::keep_alive<1, 2>())
      .def("next", &PyGenerator::next)
      .def("next_text", &PyGenerator::next_text)
      .def("ended", &PyGenerator::ended)
      .def_property_readonly("position", &PyGenerator::position);
}
