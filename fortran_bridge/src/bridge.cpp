// C ABI over libtorch: model registry, named inputs/outputs, screening, errors.
// Every entry point catches everything: no exception crosses into Fortran.
#include "paramlib_bridge.h"

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <ATen/autocast_mode.h>
#include <omp.h>
#include <torch/cuda.h>
#include <torch/script.h>

#include <algorithm>
#include <atomic>
#include <cctype>
#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>
#include <memory>
#include <mutex>
#include <sstream>
#include <string>
#include <unordered_map>
#include <vector>

#include "metadata.hpp"
#include "sha256.hpp"

namespace {

using paramlib::FieldSpec;
using paramlib::ModelMetadata;

thread_local std::string g_last_error;

// libtorch runs its CPU kernels on the OpenMP runtime it shares with an OpenMP host: its
// thread count is the calling thread's OpenMP team size (the nthreads ICV), and it sets that
// ICV itself (pl_set_num_threads, and lazily on a thread's first parallel kernel). The bridge
// keeps its count here and applies it only for the duration of a call, so the host's own
// parallel regions keep the team size the host chose.
std::atomic<int> g_intra_threads{0};  // 0: libtorch's default

class IntraOpScope {
 public:
  IntraOpScope() : host_(omp_get_max_threads()) {
    const int n = g_intra_threads.load();
    if (n > 0) omp_set_num_threads(n);
  }
  ~IntraOpScope() { omp_set_num_threads(host_); }
  IntraOpScope(const IntraOpScope &) = delete;
  IntraOpScope &operator=(const IntraOpScope &) = delete;

 private:
  int host_;
};

std::string lower(std::string s) {
  for (auto &c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

bool is_sha256_hex(const std::string &s) {
  return s.size() == 64 && std::all_of(s.begin(), s.end(), [](unsigned char c) { return std::isxdigit(c); });
}

// One line of a libtorch error for a status message. c10 errors say what went wrong on their
// first line (a C++ backtrace follows); the TorchScript interpreter's first line only says that
// something failed, and the model's own error ("builtins.RuntimeError: ...") is the last line.
std::string error_summary(const std::string &what) {
  const std::string first = what.substr(0, what.find('\n'));
  if (first.find("TorchScript interpreter") == std::string::npos) return first;
  const auto end = what.find_last_not_of(" \n");
  if (end == std::string::npos) return first;
  const auto newline = what.rfind('\n', end);
  const auto begin = newline == std::string::npos ? 0 : newline + 1;
  return what.substr(begin, end - begin + 1);
}

int fail(int status, const std::string &msg) {
  g_last_error = msg;
  return status;
}

// Weights and metadata, shared by a model and its clones.
struct Loaded {
  mutable torch::jit::Module module;  // forward is not const in libtorch
  ModelMetadata meta;
  torch::Device device{torch::kCPU};
  std::string path;
};

// The inputs, outputs and reused buffers of one thread's call sequence on one handle
// (set_input ... forward ... get_output).
struct CallState {
  int64_t ncol = -1;                  // column count of the call being assembled
  std::vector<torch::Tensor> inputs;  // (ncol, nlev) float32 on the model device
  std::vector<bool> input_set;
  std::vector<torch::Tensor> staging;     // reused host buffers (pinned for CUDA)
  std::vector<torch::Tensor> device_buf;  // reused device buffers (CUDA only)
  std::vector<torch::Tensor> out_staging;
  std::vector<std::vector<uint8_t>> input_bad;  // per input, per column: NaN/Inf seen
  std::vector<torch::Tensor> outputs;
  std::vector<uint8_t> last_bad;
  int64_t last_ncol = -1;

  explicit CallState(const ModelMetadata &meta) {
    const auto n_in = meta.inputs.size();
    inputs.resize(n_in);
    input_set.assign(n_in, false);
    staging.resize(n_in);
    device_buf.resize(n_in);
    input_bad.resize(n_in);
    out_staging.resize(meta.outputs.size());
  }
};

// One handle: shared weights, its settings, and a CallState per calling thread, so
// threads sharing a handle never see each other's inputs or outputs.
struct Model : std::enable_shared_from_this<Model> {
  std::shared_ptr<const Loaded> loaded;
  std::mutex mu;  // held by every call that touches call states: one forward at a time
  std::atomic<bool> screening{true};
  std::atomic<bool> require_units{false};
  // Reduced precision (pl_model_set_precision); mu held. Unchecked until the first forward
  // after it was set has compared it with float32.
  int precision = PL_PRECISION_FP32;
  double precision_tolerance = 0.0;
  bool precision_checked = true;
  double precision_error = -1.0;
  std::unordered_map<uint64_t, std::unique_ptr<CallState>> calls;  // by ThreadCalls::token

  explicit Model(std::shared_ptr<const Loaded> l) : loaded(std::move(l)) {}
  CallState &state();       // the calling thread's, created on first use; mu held
  CallState *find_state();  // nullptr before this thread's first set_input; mu held
};

// A number per thread that is never reused (a std::thread::id may be), and, when the
// thread ends, removal of its call states from the handles it used: a host that starts
// new threads (not a pool) does not grow memory.
std::atomic<uint64_t> g_next_token{1};

struct ThreadCalls {
  const uint64_t token = g_next_token++;
  std::vector<std::weak_ptr<Model>> used;

  ThreadCalls() = default;
  ThreadCalls(const ThreadCalls &) = delete;
  ThreadCalls &operator=(const ThreadCalls &) = delete;
  ~ThreadCalls() {
    for (auto &w : used)
      if (auto m = w.lock()) {
        std::lock_guard<std::mutex> lock(m->mu);
        m->calls.erase(token);
      }
  }
  void remember(std::weak_ptr<Model> m) {
    used.erase(std::remove_if(used.begin(), used.end(), [](const auto &w) { return w.expired(); }), used.end());
    used.push_back(std::move(m));
  }
};

thread_local ThreadCalls t_calls;

CallState &Model::state() {
  auto &slot = calls[t_calls.token];
  if (!slot) {
    slot = std::make_unique<CallState>(loaded->meta);
    t_calls.remember(weak_from_this());
  }
  return *slot;
}

CallState *Model::find_state() {
  auto it = calls.find(t_calls.token);
  return it == calls.end() ? nullptr : it->second.get();
}

std::mutex g_registry_mu;
std::unordered_map<pl_handle, std::shared_ptr<Model>> g_registry;
pl_handle g_next_handle = 1;  // never reused, so a stale handle is detected

std::shared_ptr<Model> lookup(pl_handle h) {
  std::lock_guard<std::mutex> lock(g_registry_mu);
  auto it = g_registry.find(h);
  return it == g_registry.end() ? nullptr : it->second;
}

pl_handle register_model(std::shared_ptr<Model> m) {
  std::lock_guard<std::mutex> lock(g_registry_mu);
  const pl_handle h = g_next_handle++;
  g_registry.emplace(h, std::move(m));
  return h;
}

// Appended to "not set"/"no outputs" messages: a thread never sees another thread's call.
const std::string kPerThread = " (inputs and outputs are kept per calling thread)";

int bad_handle(pl_handle h) {
  return fail(PL_ERR_HANDLE,
              "model handle " + std::to_string(h) + " is not a loaded model (never loaded, or already freed)");
}

std::string field_list(const std::vector<FieldSpec> &fields) {
  std::string s;
  for (const auto &f : fields) s += (s.empty() ? "" : ", ") + f.name;
  return s;
}

const char *kind_name(int kind) { return kind == 0 ? "input" : "output"; }

const std::vector<FieldSpec> &fields_of(const ModelMetadata &m, int kind) { return kind == 0 ? m.inputs : m.outputs; }

bool blank(const char *s) {
  if (!s) return true;
  for (; *s; ++s)
    if (!std::isspace(static_cast<unsigned char>(*s))) return false;
  return true;
}

// Resolves a name and checks level count, units (given, or required by the handle) and
// (when given) level order against the metadata.
int check_field(const Model &m, int kind, const char *name, int nlev, const char *units, const char *level_order,
                int *index) {
  if (kind != 0 && kind != 1) return fail(PL_ERR_ARGUMENT, "field kind must be 0 (input) or 1 (output)");
  const Loaded &l = *m.loaded;
  const auto &map = kind == 0 ? l.meta.input_index : l.meta.output_index;
  const auto &fields = fields_of(l.meta, kind);
  const std::string n = name ? name : "";
  auto it = map.find(n);
  if (it == map.end())
    return fail(PL_ERR_NAME, std::string("model '") + l.path + "' has no " + kind_name(kind) + " named '" + n +
                                 "'; its " + kind_name(kind) + "s are: " + field_list(fields));
  const FieldSpec &f = fields[it->second];
  if (nlev != f.nlev)
    return fail(PL_ERR_LEVELS, std::string(kind_name(kind)) + " '" + n + "': host field has " + std::to_string(nlev) +
                                   " levels, model expects " + std::to_string(f.nlev));
  if (blank(units)) {
    if (m.require_units)
      return fail(PL_ERR_UNITS, std::string(kind_name(kind)) + " '" + n +
                                    "': no units given, and this handle requires them " +
                                    "(require_units is on); model expects '" + f.units + "'");
  } else if (!paramlib::same_units(units, f.units)) {
    return fail(PL_ERR_UNITS, std::string(kind_name(kind)) + " '" + n + "': host units '" + units +
                                  "', model expects '" + f.units + "'");
  }
  if (!blank(level_order)) {
    if (!paramlib::known_level_order(level_order))
      return fail(PL_ERR_ARGUMENT, std::string(kind_name(kind)) + " '" + n + "': level order '" + level_order +
                                       "' is not one of " + paramlib::level_order_list());
    if (f.level_order != level_order)
      return fail(PL_ERR_LEVELS, std::string(kind_name(kind)) + " '" + n + "': host levels are ordered " + level_order +
                                     ", model expects " + f.level_order);
  }
  *index = it->second;
  return PL_OK;
}

// A host array as (ncol, nlev): the three supported Fortran layouts.
struct HostView {
  int64_t ncol = 0, nlev = 0, ni = 0, nj = 0;
  int rank = 0;
  int64_t s_col = 0, s_lev = 0, s_i = 0, s_j = 0;  // element strides

  int64_t offset(int64_t c, int64_t k) const {
    if (rank == 3) return (c % ni) * s_i + k * s_lev + (c / ni) * s_j;
    return c * s_col + k * s_lev;
  }
  bool contiguous() const { return rank != 3 && (nlev == 1 || s_lev == 1) && (ncol == 1 || s_col == nlev); }
  // Tensor over the host memory with the caller's strides (no copy).
  torch::Tensor wrap(void *data, torch::ScalarType t) const {
    auto opt = torch::TensorOptions().dtype(t).device(torch::kCPU);
    if (rank == 3) return torch::from_blob(data, {nj, ni, nlev}, {s_j, s_i, s_lev}, opt);
    return torch::from_blob(data, {ncol, nlev}, {s_col, s_lev}, opt);
  }
  // Same memory seen with the column index split as the model tensor's rows.
  torch::Tensor as_rows(const torch::Tensor &t) const { return rank == 3 ? t.reshape({nj, ni, nlev}) : t; }
};

std::string label(int kind, const char *name) { return std::string(kind_name(kind)) + " '" + (name ? name : "") + "'"; }

int describe(int kind, const char *name, int rank, const int64_t *shape, const int64_t *strides, HostView *v) {
  if (!shape || !strides) return fail(PL_ERR_ARGUMENT, label(kind, name) + ": shape and strides are required");
  for (int d = 0; d < rank && d < 3; ++d)
    if (shape[d] < 1)
      return fail(PL_ERR_SHAPE, label(kind, name) + ": extent " + std::to_string(shape[d]) + " in dimension " +
                                    std::to_string(d + 1) + " (must be >= 1)");
  v->rank = rank;
  switch (rank) {
    case 1:
      v->ncol = shape[0];
      v->nlev = 1;
      v->s_col = strides[0];
      v->s_lev = 1;
      break;
    case 2:
      v->nlev = shape[0];
      v->ncol = shape[1];
      v->s_lev = strides[0];
      v->s_col = strides[1];
      break;
    case 3:
      v->ni = shape[0];
      v->nlev = shape[1];
      v->nj = shape[2];
      v->s_i = strides[0];
      v->s_lev = strides[1];
      v->s_j = strides[2];
      v->ncol = v->ni * v->nj;
      break;
    default:
      return fail(PL_ERR_SHAPE, label(kind, name) + ": rank " + std::to_string(rank) +
                                    " is not supported (1: (ncol), 2: (nlev, ncol), 3: (i, k, j) tile)");
  }
  return PL_OK;
}

// The checks shared by pl_set_input and pl_get_output: layout, dtype, name, levels, units.
int resolve_host(const Model &m, int kind, const char *name, const char *units, const void *data, int dtype, int rank,
                 const int64_t *shape, const int64_t *strides, HostView *v, torch::ScalarType *t, int *index) {
  int st = describe(kind, name, rank, shape, strides, v);
  if (st != PL_OK) return st;
  if (dtype == PL_FLOAT32)
    *t = torch::kFloat32;
  else if (dtype == PL_FLOAT64)
    *t = torch::kFloat64;
  else
    return fail(PL_ERR_ARGUMENT,
                label(kind, name) + ": dtype " + std::to_string(dtype) + " is not PL_FLOAT32 (0) or PL_FLOAT64 (1)");
  st = check_field(m, kind, name, static_cast<int>(v->nlev), units, nullptr, index);
  if (st != PL_OK) return st;
  if (!data) return fail(PL_ERR_ARGUMENT, label(kind, name) + ": data pointer is NULL");
  return PL_OK;
}

// Marks columns with a NaN/Inf at any level; returns how many columns of this field are bad.
template <typename T>
int64_t screen(const T *data, const HostView &v, std::vector<uint8_t> &bad) {
  int64_t n = 0;
  for (int64_t c = 0; c < v.ncol; ++c) {
    bool col_bad = false;
    for (int64_t k = 0; k < v.nlev && !col_bad; ++k) col_bad = !std::isfinite(data[v.offset(c, k)]);
    if (col_bad) {
      bad[c] = 1;
      ++n;
    }
  }
  return n;
}

torch::Tensor reuse(torch::Tensor &buf, int64_t ncol, int64_t nlev, const torch::TensorOptions &opt) {
  if (!buf.defined() || buf.size(0) != ncol || buf.size(1) != nlev) buf = torch::empty({ncol, nlev}, opt);
  return buf;
}

template <typename F>
int guarded(const char *where, F &&body) {
  try {
    return body();
  } catch (const std::exception &e) {
    return fail(PL_ERR_RUNTIME, std::string(where) + ": " + e.what());
  } catch (...) {
    return fail(PL_ERR_RUNTIME, std::string(where) + ": unknown error");
  }
}

// forward in a reduced precision: bf16 by autocast on the model's device (thread-local, so
// other threads keep theirs), TF32 by cuBLAS's process-wide switch; restored after. Float32
// touches nothing (a float32 forward on another thread must not restore a TF32 switch).
class PrecisionScope {
 public:
  PrecisionScope(int precision, c10::DeviceType device) : precision_(precision), device_(device) {
    if (precision_ == PL_PRECISION_BF16) {
      autocast_ = at::autocast::is_autocast_enabled(device);
      dtype_ = at::autocast::get_autocast_dtype(device);
      at::autocast::set_autocast_dtype(device, at::kBFloat16);
      at::autocast::set_autocast_enabled(device, true);
    } else if (precision_ == PL_PRECISION_TF32) {
      std::lock_guard<std::mutex> lock(tf32_mu_);
      if (tf32_users_++ == 0) {  // the first of concurrent TF32 forwards saves the switch
        tf32_saved_ = at::globalContext().allowTF32CuBLAS();
        at::globalContext().setAllowTF32CuBLAS(true);
      }
    }
  }
  ~PrecisionScope() {
    if (precision_ == PL_PRECISION_BF16) {
      at::autocast::set_autocast_enabled(device_, autocast_);
      at::autocast::set_autocast_dtype(device_, dtype_);
      at::autocast::clear_cache();
    } else if (precision_ == PL_PRECISION_TF32) {
      std::lock_guard<std::mutex> lock(tf32_mu_);
      if (--tf32_users_ == 0) at::globalContext().setAllowTF32CuBLAS(tf32_saved_);  // the last restores it
    }
  }
  PrecisionScope(const PrecisionScope &) = delete;
  PrecisionScope &operator=(const PrecisionScope &) = delete;

 private:
  int precision_;
  c10::DeviceType device_;
  bool autocast_ = false;
  at::ScalarType dtype_ = at::kFloat;
  static inline std::mutex tf32_mu_;
  static inline int tf32_users_ = 0;
  static inline bool tf32_saved_ = false;
};

const char *precision_name(int precision) {
  return precision == PL_PRECISION_BF16 ? "bf16" : precision == PL_PRECISION_TF32 ? "tf32" : "fp32";
}

// The model's outputs (a tensor, a tuple or a list of them) as float32 tensors.
std::vector<torch::Tensor> run_model(const Loaded &l, std::vector<torch::IValue> args, int precision) {
  torch::IValue result;
  {
    PrecisionScope scope(precision, l.device.type());
    result = l.module.forward(std::move(args));
  }
  std::vector<torch::Tensor> outs;
  if (result.isTensor())
    outs.push_back(result.toTensor());
  else if (result.isTuple())
    for (const auto &x : result.toTupleRef().elements()) outs.push_back(x.toTensor());
  else if (result.isTensorList())
    outs = result.toTensorVector();
  for (auto &x : outs)
    if (x.scalar_type() != torch::kFloat32) x = x.to(torch::kFloat32);
  return outs;
}

// ||reduced - reference||_2 / ||reference||_2 (0 when both are zero, inf when only the
// reference is; NaN propagates, so a NaN never passes a tolerance).
double relative_error(const torch::Tensor &reduced, const torch::Tensor &reference) {
  const double norm = reference.norm().item<double>();
  const double diff = (reduced - reference).norm().item<double>();
  if (norm > 0) return diff / norm;
  return diff > 0 ? std::numeric_limits<double>::infinity() : diff;
}

// The first forward after pl_model_set_precision: the model in float32 and in the precision
// asked for; keeps the reduced outputs when every output is within the tolerance, else the
// float32 ones, going back to float32 and saying why in *refused. mu held.
std::vector<torch::Tensor> checked_forward(Model &m, std::vector<torch::IValue> args, std::string *refused) {
  const Loaded &l = *m.loaded;
  auto reference = run_model(l, args, PL_PRECISION_FP32);
  auto reduced = run_model(l, std::move(args), m.precision);
  double worst = 0.0;
  std::string worst_name;
  for (std::size_t o = 0; o < reference.size() && o < reduced.size(); ++o) {
    if (reference[o].sizes() != reduced[o].sizes()) continue;  // the shape check reports it
    const double e = relative_error(reduced[o], reference[o]);
    if (!(e <= worst)) {
      worst = e;
      worst_name = o < l.meta.outputs.size() ? l.meta.outputs[o].name : std::to_string(o);
    }
  }
  m.precision_checked = true;
  m.precision_error = worst;
  if (worst <= m.precision_tolerance) return reduced;
  std::ostringstream why;
  why << precision_name(m.precision) << " refused for '" << l.path << "': output '" << worst_name
      << "' differs from float32 by " << worst << " (relative L2), tolerance " << m.precision_tolerance
      << "; this forward and the next ones run in float32";
  *refused = why.str();
  m.precision = PL_PRECISION_FP32;
  return reference;
}

}  // namespace

extern "C" {

const char *pl_last_error(void) { return g_last_error.c_str(); }

const char *pl_version(void) { return PARAMLIB_BRIDGE_VERSION; }

int pl_set_num_threads(int n) {
  if (n < 1) return fail(PL_ERR_ARGUMENT, "thread count must be >= 1, got " + std::to_string(n));
  return guarded("pl_set_num_threads", [&]() -> int {
    IntraOpScope scope;  // at::set_num_threads also sets this thread's OpenMP ICV
    at::set_num_threads(n);
    g_intra_threads = n;
    return PL_OK;
  });
}

int pl_cuda_device_count(void) {
  return torch::cuda::is_available() ? static_cast<int>(torch::cuda::device_count()) : 0;
}

int pl_model_load(const char *path, int device, int device_index, pl_handle *out) {
  return pl_model_load_pinned(path, device, device_index, nullptr, out);
}

int pl_model_load_pinned(const char *path, int device, int device_index, const char *sha256, pl_handle *out) {
  if (!out) return fail(PL_ERR_ARGUMENT, "pl_model_load: out is NULL");
  *out = 0;
  const std::string p = path ? path : "";
  const std::string want = lower(sha256 ? sha256 : "");
  if (!want.empty() && !is_sha256_hex(want))
    return fail(PL_ERR_ARGUMENT,
                "expected SHA-256 of '" + p + "' must be 64 hexadecimal characters, got '" + want + "'");
  return guarded("pl_model_load", [&]() -> int {
    IntraOpScope threads;
    std::ifstream file(p, std::ios::binary);
    if (!file.good()) return fail(PL_ERR_FILE, "cannot open model file '" + p + "' (missing or unreadable)");
    // A pinned file is read once: the bytes hashed are the bytes loaded, and nothing of
    // the file runs before its hash matched.
    std::string bytes;
    if (!want.empty()) {
      file.seekg(0, std::ios::end);
      const std::streamoff size = file.tellg();
      file.seekg(0);
      if (size >= 0) {
        bytes.resize(static_cast<std::size_t>(size));
        file.read(bytes.data(), size);
      }
      if (size < 0 || !file) return fail(PL_ERR_FILE, "reading model file '" + p + "' failed");
      const std::string got = paramlib::sha256_hex(bytes.data(), bytes.size());
      if (got != want)
        return fail(PL_ERR_HASH, "model file '" + p + "' has SHA-256 " + got + ", expected " + want +
                                     " (not the pinned file: replaced, altered or truncated)");
    }
    auto l = std::make_shared<Loaded>();
    l->path = p;
    if (device == PL_DEVICE_CUDA) {
      const int n = pl_cuda_device_count();
      if (device_index < 0 || device_index >= n)
        return fail(PL_ERR_DEVICE, "device cuda:" + std::to_string(device_index) + " requested for '" + p + "' but " +
                                       (n == 0 ? std::string("no CUDA device is available to this libtorch")
                                               : std::to_string(n) + " CUDA device(s) are visible"));
      l->device = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(device_index));
    } else if (device != PL_DEVICE_CPU) {
      return fail(PL_ERR_DEVICE,
                  "device " + std::to_string(device) + " is not PL_DEVICE_CPU (0) or PL_DEVICE_CUDA (1)");
    }
    torch::jit::ExtraFilesMap extra{{"paramlib.json", ""}};
    try {
      if (want.empty()) {
        l->module = torch::jit::load(p, l->device, extra);
      } else {
        std::istringstream in(std::move(bytes));
        l->module = torch::jit::load(in, l->device, extra);
      }
    } catch (const std::exception &e) {
      std::string what = e.what();
      return fail(PL_ERR_LOAD, "'" + p + "' is not a loadable TorchScript model: " + error_summary(what));
    }
    if (extra["paramlib.json"].empty())
      return fail(PL_ERR_METADATA,
                  "model file '" + p + "' has no paramlib.json metadata (export it with paramlib.export.save)");
    try {
      l->meta = paramlib::parse_metadata(extra["paramlib.json"]);
    } catch (const std::exception &e) {
      return fail(PL_ERR_METADATA, "model file '" + p + "': " + e.what());
    }
    l->module.eval();
    *out = register_model(std::make_shared<Model>(l));
    return PL_OK;
  });
}

int pl_model_clone(pl_handle model, pl_handle *out) {
  auto m = lookup(model);
  if (!m) return bad_handle(model);
  if (!out) return fail(PL_ERR_ARGUMENT, "pl_model_clone: out is NULL");
  return guarded("pl_model_clone", [&]() -> int {
    auto copy = std::make_shared<Model>(m->loaded);
    copy->require_units = m->require_units.load();
    *out = register_model(copy);
    return PL_OK;
  });
}

int pl_model_free(pl_handle model) {
  std::shared_ptr<Model> m;
  {
    std::lock_guard<std::mutex> lock(g_registry_mu);
    auto it = g_registry.find(model);
    if (it == g_registry.end()) return bad_handle(model);
    m = std::move(it->second);
    g_registry.erase(it);
  }
  std::lock_guard<std::mutex> lock(m->mu);  // wait for a call in flight on another thread
  return PL_OK;
}

int pl_model_set_screening(pl_handle model, int on) {
  auto m = lookup(model);
  if (!m) return bad_handle(model);
  m->screening = on != 0;
  return PL_OK;
}

int pl_model_require_units(pl_handle model, int on) {
  auto m = lookup(model);
  if (!m) return bad_handle(model);
  m->require_units = on != 0;
  return PL_OK;
}

int pl_model_set_precision(pl_handle model, int precision, double tolerance) {
  auto m = lookup(model);
  if (!m) return bad_handle(model);
  std::lock_guard<std::mutex> lock(m->mu);
  if (precision != PL_PRECISION_FP32 && precision != PL_PRECISION_BF16 && precision != PL_PRECISION_TF32)
    return fail(PL_ERR_ARGUMENT, "pl_model_set_precision: precision " + std::to_string(precision) +
                                     " is not PL_PRECISION_FP32, PL_PRECISION_BF16 or PL_PRECISION_TF32");
  if (precision != PL_PRECISION_FP32 && !(std::isfinite(tolerance) && tolerance > 0)) {
    std::ostringstream why;
    why << "pl_model_set_precision: tolerance " << tolerance
        << " must be a finite number > 0 (the largest relative L2 error against float32)";
    return fail(PL_ERR_ARGUMENT, why.str());
  }
  if (precision == PL_PRECISION_TF32 && !m->loaded->device.is_cuda())
    return fail(PL_ERR_DEVICE, "pl_model_set_precision: TF32 is a CUDA matmul mode and '" + m->loaded->path +
                                   "' runs on the CPU (PL_PRECISION_BF16 runs on both)");
  m->precision = precision;
  m->precision_tolerance = tolerance;
  m->precision_checked = precision == PL_PRECISION_FP32;
  m->precision_error = -1.0;
  return PL_OK;
}

int pl_model_precision(pl_handle model, int *precision, double *rel_error) {
  auto m = lookup(model);
  if (!m) return bad_handle(model);
  std::lock_guard<std::mutex> lock(m->mu);
  if (precision) *precision = m->precision;
  if (rel_error) *rel_error = m->precision_error;
  return PL_OK;
}

int pl_model_num_fields(pl_handle model, int kind, int *n) {
  auto m = lookup(model);
  if (!m) return bad_handle(model);
  if ((kind != 0 && kind != 1) || !n)
    return fail(PL_ERR_ARGUMENT, "pl_model_num_fields: kind must be 0 or 1 and n non-NULL");
  *n = static_cast<int>(fields_of(m->loaded->meta, kind).size());
  return PL_OK;
}

int pl_model_field_info(pl_handle model, int kind, int index, char *name, int name_len, char *units, int units_len,
                        int *nlev) {
  auto m = lookup(model);
  if (!m) return bad_handle(model);
  if (kind != 0 && kind != 1) return fail(PL_ERR_ARGUMENT, "field kind must be 0 (input) or 1 (output)");
  const auto &fields = fields_of(m->loaded->meta, kind);
  if (index < 0 || index >= static_cast<int>(fields.size()))
    return fail(PL_ERR_ARGUMENT, std::string(kind_name(kind)) + " index " + std::to_string(index) +
                                     " out of range 0.." + std::to_string(fields.size() - 1));
  const FieldSpec &f = fields[index];
  // Too short a buffer is an error, never a truncated name.
  const auto fits = [](const std::string &s, const char *buf, int len) {
    return !buf || static_cast<std::size_t>(len) > s.size();
  };
  if (!fits(f.name, name, name_len) || !fits(f.units, units, units_len))
    return fail(PL_ERR_ARGUMENT, std::string(kind_name(kind)) + " '" + f.name + "': name needs " +
                                     std::to_string(f.name.size() + 1) + " and units " +
                                     std::to_string(f.units.size() + 1) + " bytes, buffers have " +
                                     std::to_string(name_len) + " and " + std::to_string(units_len));
  const auto put = [](const std::string &s, char *buf) {
    if (buf) std::memcpy(buf, s.c_str(), s.size() + 1);
  };
  put(f.name, name);
  put(f.units, units);
  if (nlev) *nlev = f.nlev;
  return PL_OK;
}

int pl_model_ensemble_size(pl_handle model, int *n) {
  auto m = lookup(model);
  if (!m) return bad_handle(model);
  if (!n) return fail(PL_ERR_ARGUMENT, "pl_model_ensemble_size: n is NULL");
  *n = m->loaded->meta.ensemble_size;
  return PL_OK;
}

int pl_model_metadata_json(pl_handle model, char *buf, int buflen, int *needed) {
  auto m = lookup(model);
  if (!m) return bad_handle(model);
  const std::string &s = m->loaded->meta.json;
  if (needed) *needed = static_cast<int>(s.size()) + 1;
  if (buf && buflen > 0) {
    // Whole or nothing: a truncated JSON would parse as garbage or not at all.
    if (static_cast<std::size_t>(buflen) > s.size())
      std::memcpy(buf, s.c_str(), s.size() + 1);
    else
      buf[0] = '\0';
  }
  return PL_OK;
}

int pl_model_valid_range(pl_handle model, const char *name, double *lo, double *hi, int len, int *nlev) {
  auto m = lookup(model);
  if (!m) return bad_handle(model);
  const ModelMetadata &meta = m->loaded->meta;
  const std::string n = name ? name : "";
  const auto it = meta.input_index.find(n);
  if (it == meta.input_index.end())
    return fail(PL_ERR_NAME, "model '" + m->loaded->path + "' has no input named '" + n +
                                 "'; its inputs are: " + field_list(meta.inputs));
  const FieldSpec &f = meta.inputs[it->second];
  if (nlev) *nlev = f.nlev;
  return guarded("pl_model_valid_range", [&]() -> int {
    paramlib::ValidRange range;
    bool found = false;
    try {
      found = paramlib::find_valid_range(meta.json, f, range);
    } catch (const std::exception &e) {
      return fail(PL_ERR_METADATA, "model file '" + m->loaded->path + "': " + e.what());
    }
    if (!found) {
      range.lo.assign(f.nlev, -std::numeric_limits<double>::max());
      range.hi.assign(f.nlev, std::numeric_limits<double>::max());
    }
    if (lo && hi) {
      // Too short a buffer is an error, never a part of the range.
      if (len < f.nlev)
        return fail(PL_ERR_ARGUMENT, "valid_range of input '" + n + "': buffers of " + std::to_string(len) +
                                         " values, the input has " + std::to_string(f.nlev) + " levels");
      std::copy(range.lo.begin(), range.lo.end(), lo);
      std::copy(range.hi.begin(), range.hi.end(), hi);
    }
    if (found) return PL_OK;
    return fail(PL_WARN_NO_RANGE, "model '" + m->loaded->path + "' records no valid range for input '" + n + "'");
  });
}

int pl_model_check_field(pl_handle model, int kind, const char *name, int nlev, const char *units,
                         const char *level_order) {
  auto m = lookup(model);
  if (!m) return bad_handle(model);
  int index = 0;
  return check_field(*m, kind, name, nlev, units, level_order, &index);
}

int pl_set_input(pl_handle model, const char *name, const char *units, const void *data, int dtype, int rank,
                 const int64_t *shape, const int64_t *strides) {
  auto m = lookup(model);
  if (!m) return bad_handle(model);
  std::lock_guard<std::mutex> lock(m->mu);
  return guarded("pl_set_input", [&]() -> int {
    IntraOpScope threads;
    CallState &cs = m->state();
    const Loaded &l = *m->loaded;
    HostView v;
    torch::ScalarType t{};
    int index = 0;
    const int st = resolve_host(*m, 0, name, units, data, dtype, rank, shape, strides, &v, &t, &index);
    if (st != PL_OK) return st;
    if (cs.ncol >= 0 && cs.ncol != v.ncol)
      return fail(PL_ERR_SHAPE, label(0, name) + ": " + std::to_string(v.ncol) +
                                    " columns, but inputs already set for this call have " + std::to_string(cs.ncol));
    cs.ncol = v.ncol;
    // Flags per input, so setting a field again replaces its earlier verdict.
    auto &flags = cs.input_bad[index];
    flags.assign(v.ncol, 0);
    int64_t nbad = 0;
    if (m->screening) {
      nbad = t == torch::kFloat32 ? screen(static_cast<const float *>(data), v, flags)
                                  : screen(static_cast<const double *>(data), v, flags);
    }
    torch::Tensor host = v.wrap(const_cast<void *>(data), t);
    const bool cuda = l.device.is_cuda();
    if (!cuda && t == torch::kFloat32 && v.contiguous() && nbad == 0) {
      cs.inputs[index] = host;  // zero-copy: the host array is the model input
    } else {
      // One copy: dtype conversion, strided/tile gather, NaN masking or staging for the device.
      auto opt = torch::TensorOptions().dtype(torch::kFloat32).pinned_memory(cuda);
      torch::Tensor buf = reuse(cs.staging[index], v.ncol, v.nlev, opt);
      v.as_rows(buf).copy_(host);
      if (nbad > 0) {
        float *p = buf.data_ptr<float>();
        for (int64_t c = 0; c < v.ncol; ++c)
          for (int64_t k = 0; k < v.nlev; ++k)
            if (!std::isfinite(p[c * v.nlev + k])) p[c * v.nlev + k] = 0.0f;
      }
      if (cuda) {
        auto dopt = torch::TensorOptions().dtype(torch::kFloat32).device(l.device);
        torch::Tensor dev = reuse(cs.device_buf[index], v.ncol, v.nlev, dopt);
        dev.copy_(buf, /*non_blocking=*/true);
        cs.inputs[index] = dev;
      } else {
        cs.inputs[index] = buf;
      }
    }
    cs.input_set[index] = true;
    return PL_OK;
  });
}

int pl_forward(pl_handle model, int64_t *n_bad) {
  auto m = lookup(model);
  if (!m) return bad_handle(model);
  std::lock_guard<std::mutex> lock(m->mu);
  if (n_bad) *n_bad = 0;
  return guarded("pl_forward", [&]() -> int {
    IntraOpScope threads;
    CallState &cs = m->state();
    const Loaded &l = *m->loaded;
    for (std::size_t i = 0; i < cs.input_set.size(); ++i)
      if (!cs.input_set[i])
        return fail(PL_ERR_NOT_READY, "forward: input '" + l.meta.inputs[i].name +
                                          "' was not set since the last forward (set every input before each forward)" +
                                          kPerThread);
    const int64_t ncol = cs.ncol;
    std::vector<torch::IValue> args(cs.inputs.begin(), cs.inputs.end());
    // Release the host arrays now: the next call must set every input again.
    std::fill(cs.input_set.begin(), cs.input_set.end(), false);
    for (auto &x : cs.inputs) x = torch::Tensor();
    cs.ncol = -1;
    cs.outputs.clear();
    cs.last_bad.assign(ncol, 0);
    for (const auto &flags : cs.input_bad)
      for (int64_t c = 0; c < ncol; ++c) cs.last_bad[c] |= flags[c];
    cs.last_ncol = ncol;

    c10::InferenceMode guard;
    std::vector<torch::Tensor> outs;
    std::string refused;  // the reduced precision asked for, refused by its check
    try {
      outs = m->precision_checked ? run_model(l, std::move(args), m->precision)
                                  : checked_forward(*m, std::move(args), &refused);
    } catch (const std::exception &e) {
      std::string what = e.what();
      return fail(PL_ERR_RUNTIME, "forward of '" + l.path + "' failed: " + error_summary(what));
    }
    const int ens = l.meta.ensemble_size;
    if (outs.size() != l.meta.outputs.size())
      return fail(PL_ERR_RUNTIME, "model '" + l.path + "' returned " + std::to_string(outs.size()) +
                                      " outputs, metadata lists " + std::to_string(l.meta.outputs.size()));
    for (std::size_t o = 0; o < outs.size(); ++o) {
      const auto nlev = l.meta.outputs[o].nlev;
      const std::vector<int64_t> want =
          ens > 1 ? std::vector<int64_t>{ens, ncol, nlev} : std::vector<int64_t>{ncol, nlev};
      if (outs[o].sizes().vec() != want)
        return fail(PL_ERR_RUNTIME, "model '" + l.path + "' output '" + l.meta.outputs[o].name + "' has shape " +
                                        c10::str(outs[o].sizes()) + ", metadata implies " +
                                        c10::str(c10::IntArrayRef(want)));
    }
    int64_t nbad = 0;
    for (auto b : cs.last_bad) nbad += b;
    if (nbad > 0) {
      std::vector<int64_t> cols;
      for (int64_t c = 0; c < ncol; ++c)
        if (cs.last_bad[c]) cols.push_back(c);
      auto idx = torch::tensor(cols, torch::TensorOptions().dtype(torch::kLong)).to(l.device);
      for (auto &x : outs) x = x.index_fill(ens > 1 ? 1 : 0, idx, 0.0);
    }
    cs.outputs = std::move(outs);
    if (n_bad) *n_bad = nbad;
    if (nbad > 0)
      return fail(PL_WARN_BAD_INPUT,
                  std::to_string(nbad) + " of " + std::to_string(ncol) +
                      " columns had NaN/Inf inputs; they were run on zeros and their outputs set to zero" +
                      (refused.empty() ? "" : "; " + refused));
    if (!refused.empty()) return fail(PL_WARN_PRECISION, refused);
    return PL_OK;
  });
}

int pl_bad_columns(pl_handle model, int32_t *flags, int64_t ncol) {
  auto m = lookup(model);
  if (!m) return bad_handle(model);
  std::lock_guard<std::mutex> lock(m->mu);
  const CallState *found = m->find_state();
  if (!found || found->last_ncol < 0)
    return fail(PL_ERR_NOT_READY, "pl_bad_columns: no forward has run on this handle in this thread" + kPerThread);
  const CallState &cs = *found;
  if (!flags || ncol != cs.last_ncol)
    return fail(PL_ERR_SHAPE, "pl_bad_columns: flags array has " + std::to_string(ncol) +
                                  " entries, last forward had " + std::to_string(cs.last_ncol) + " columns");
  for (int64_t c = 0; c < ncol; ++c) flags[c] = cs.last_bad.empty() ? 0 : cs.last_bad[c];
  return PL_OK;
}

int pl_get_output(pl_handle model, const char *name, const char *units, void *data, int dtype, int rank,
                  const int64_t *shape, const int64_t *strides, int statistic, int member) {
  auto m = lookup(model);
  if (!m) return bad_handle(model);
  std::lock_guard<std::mutex> lock(m->mu);
  return guarded("pl_get_output", [&]() -> int {
    IntraOpScope threads;
    const Loaded &l = *m->loaded;
    HostView v;
    torch::ScalarType t{};
    int index = 0;
    const int st = resolve_host(*m, 1, name, units, data, dtype, rank, shape, strides, &v, &t, &index);
    if (st != PL_OK) return st;
    CallState *found = m->find_state();
    if (!found || found->outputs.empty())
      return fail(PL_ERR_NOT_READY, label(1, name) + ": no outputs yet (call forward first)" + kPerThread);
    CallState &cs = *found;
    if (v.ncol != cs.last_ncol)
      return fail(PL_ERR_SHAPE, label(1, name) + ": host array has " + std::to_string(v.ncol) +
                                    " columns, the last forward had " + std::to_string(cs.last_ncol));
    const int ens = l.meta.ensemble_size;
    c10::InferenceMode guard;
    const torch::Tensor &out = cs.outputs[index];
    torch::Tensor src;
    if (statistic == PL_MEAN) {
      src = ens > 1 ? out.mean(0) : out;
    } else if (statistic == PL_SPREAD) {
      if (ens == 1)
        return fail(PL_ERR_ARGUMENT,
                    label(1, name) + ": the model is deterministic (ensemble_size 1), it has no spread");
      src = out.std(0, /*unbiased=*/false);
    } else if (statistic == PL_MEMBER) {
      if (member < 0 || member >= ens)
        return fail(PL_ERR_ARGUMENT, label(1, name) + ": member " + std::to_string(member) + " out of range 0.." +
                                         std::to_string(ens - 1) + " (0-based here; Fortran's member= counts from 1)");
      src = ens > 1 ? out[member] : out;
    } else {
      return fail(PL_ERR_ARGUMENT, label(1, name) + ": statistic " + std::to_string(statistic) +
                                       " is not PL_MEAN, PL_SPREAD or PL_MEMBER");
    }
    if (src.is_cuda()) {
      auto opt = torch::TensorOptions().dtype(torch::kFloat32).pinned_memory(true);
      torch::Tensor buf = reuse(cs.out_staging[index], v.ncol, v.nlev, opt);
      buf.copy_(src);
      src = buf;
    }
    v.wrap(data, t).copy_(v.as_rows(src));
    return PL_OK;
  });
}

}  // extern "C"
