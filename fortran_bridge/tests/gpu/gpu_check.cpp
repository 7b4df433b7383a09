// GPU check of the bridge's CUDA path. The bridge is driven only through its C ABI
// (paramlib_bridge.h); libtorch is used directly only for what the ABI cannot give: the
// plain-libtorch timing baseline, allocator statistics and the TF32 switch.
//
// usage: gpu_check --models DIR --json FILE [--cpu-only] [--time S] [--mem-calls N]
// DIR holds the files of make_test_models.py plus mfrpn_size.pt (run_gpu_checks.sh makes
// them). --cpu-only compares CPU against CPU and reports the CUDA-only parts as skipped,
// so the logic runs on a machine without a GPU. Exit status 1 if a correctness check failed;
// timings are reported, never judged.
#include "paramlib_bridge.h"

#include <ATen/Context.h>
#include <ATen/Parallel.h>
#include <dlfcn.h>
#include <torch/cuda.h>
#include <torch/script.h>
#include <torch/version.h>
#ifndef GPUKIT_NO_ALLOC_STATS
#include <c10/core/CachingDeviceAllocator.h>
#endif

#include <unistd.h>
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iostream>
#include <limits>
#include <nlohmann/json.hpp>
#include <random>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace {

using json = nlohmann::ordered_json;  // keys stay in the order written: readable output
using Clock = std::chrono::steady_clock;
using Arrays = std::vector<std::vector<float>>;  // per field, (ncol, nlev) row-major == Fortran a(nlev, ncol)

// CUDA vs CPU, relative to each output field's max |value|. An fp32 MLP of the mfrpn size is
// ~1e-6 from fp64, so different kernels stay well inside this; TF32 matmuls (~1e-3) do not.
constexpr double kDeviceTol = 1e-5;
// Same device, same shapes (clones, threads, screened vs clean columns): same kernels.
constexpr double kSameTol = 1e-6;
const std::vector<std::string> kModels = {"simple", "named", "ensemble", "mfrpn_size"};

struct Options {
  std::string models, json_path;
  bool cpu_only = false;
  double time_s = 0.5;    // per timing measurement (after warm-up)
  int mem_calls = 10000;  // calls between the two memory samples
};

struct Dev {
  int kind, index;
  std::string name;
};

// A status other than PL_OK ends the current check with the bridge's own message.
void ok(int st, const std::string &what) {
  if (st != PL_OK) throw std::runtime_error(what + ": status " + std::to_string(st) + ": " + pl_last_error());
}

// Owns one bridge handle, freed on scope exit so a failed check leaks nothing into the next.
class Handle {
 public:
  Handle() = default;
  explicit Handle(pl_handle h) : h_(h) {}
  Handle(Handle &&o) noexcept : h_(o.h_) { o.h_ = 0; }
  Handle &operator=(Handle &&o) noexcept {
    if (this != &o) {
      reset();
      h_ = o.h_;
      o.h_ = 0;
    }
    return *this;
  }
  Handle(const Handle &) = delete;
  Handle &operator=(const Handle &) = delete;
  ~Handle() { reset(); }
  pl_handle get() const { return h_; }
  void reset() {
    if (h_) pl_model_free(h_);
    h_ = 0;
  }

 private:
  pl_handle h_ = 0;
};

Handle load(const std::string &path, const Dev &d) {
  pl_handle h = 0;
  ok(pl_model_load(path.c_str(), d.kind, d.index, &h), "load " + path + " on " + d.name);
  return Handle(h);
}

Handle clone(const Handle &m) {
  pl_handle h = 0;
  ok(pl_model_clone(m.get(), &h), "clone");
  return Handle(h);
}

struct Field {
  std::string name, units;
  int64_t nlev = 1;
  std::vector<float> lo, hi;  // sampling range per level (the metadata's valid_range)
};

struct Spec {
  std::vector<Field> in, out;
  int ens = 1;
};

// Field names, units and sampling ranges, from the metadata the bridge read.
Spec spec_of(const Handle &h) {
  Spec s;
  for (int kind = 0; kind < 2; ++kind) {
    int n = 0;
    ok(pl_model_num_fields(h.get(), kind, &n), "num_fields");
    for (int i = 0; i < n; ++i) {
      char name[256], units[256];
      int nlev = 0;
      ok(pl_model_field_info(h.get(), kind, i, name, sizeof name, units, sizeof units, &nlev), "field_info");
      (kind == 0 ? s.in : s.out).push_back({name, units, nlev, {}, {}});
    }
  }
  ok(pl_model_ensemble_size(h.get(), &s.ens), "ensemble_size");
  int needed = 0;
  ok(pl_model_metadata_json(h.get(), nullptr, 0, &needed), "metadata_json");
  std::string text(static_cast<std::size_t>(needed), '\0');
  ok(pl_model_metadata_json(h.get(), text.data(), needed, &needed), "metadata_json");
  text.resize(static_cast<std::size_t>(needed - 1));
  const json meta = json::parse(text);
  for (auto &f : s.in) {
    f.lo.assign(f.nlev, -1.0f);
    f.hi.assign(f.nlev, 1.0f);
    if (meta.contains("valid_range") && meta["valid_range"].contains(f.name)) {
      f.lo = meta["valid_range"][f.name]["min"].get<std::vector<float>>();
      f.hi = meta["valid_range"][f.name]["max"].get<std::vector<float>>();
    }
  }
  return s;
}

Arrays random_inputs(const Spec &s, int64_t ncol, unsigned seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> u(0.0f, 1.0f);
  Arrays a;
  for (const auto &f : s.in) {
    std::vector<float> x(static_cast<std::size_t>(ncol * f.nlev));
    for (int64_t c = 0; c < ncol; ++c)
      for (int64_t k = 0; k < f.nlev; ++k) x[c * f.nlev + k] = f.lo[k] + (f.hi[k] - f.lo[k]) * u(rng);
    a.push_back(std::move(x));
  }
  return a;
}

Arrays zeros(const std::vector<Field> &fields, int64_t ncol) {
  Arrays a;
  for (const auto &f : fields) a.emplace_back(static_cast<std::size_t>(ncol * f.nlev), 0.0f);
  return a;
}

int set_field(const Handle &h, const Field &f, const void *data, int dtype, int64_t ncol) {
  const int64_t shape[2] = {f.nlev, ncol}, strides[2] = {1, f.nlev};
  return pl_set_input(h.get(), f.name.c_str(), f.units.c_str(), data, dtype, 2, shape, strides);
}

void get_outputs(const Handle &h, const Spec &s, Arrays &out, int64_t ncol, int statistic = PL_MEAN, int member = 0) {
  for (std::size_t o = 0; o < s.out.size(); ++o) {
    const int64_t shape[2] = {s.out[o].nlev, ncol}, strides[2] = {1, s.out[o].nlev};
    ok(pl_get_output(h.get(), s.out[o].name.c_str(), s.out[o].units.c_str(), out[o].data(), PL_FLOAT32, 2, shape,
                     strides, statistic, member),
       "get_output " + s.out[o].name);
  }
}

// A host's whole per-call work: set every input, forward, copy every output back.
// Returns the forward status (PL_OK, PL_WARN_BAD_INPUT or PL_WARN_PRECISION); anything else throws.
int call(const Handle &h, const Spec &s, const Arrays &in, Arrays &out, int64_t ncol, int64_t *n_bad = nullptr) {
  for (std::size_t i = 0; i < s.in.size(); ++i) ok(set_field(h, s.in[i], in[i].data(), PL_FLOAT32, ncol), "set_input");
  const int st = pl_forward(h.get(), n_bad);
  if (st != PL_WARN_BAD_INPUT && st != PL_WARN_PRECISION) ok(st, "forward");
  get_outputs(h, s, out, ncol);
  return st;
}

// Max over fields of max|a - ref| / max|ref|; NaN anywhere gives +inf. Optionally also
// whether all values are equal and the largest absolute difference (in its field's units).
double max_rel(const Arrays &a, const Arrays &ref, bool *bitwise = nullptr, double *max_abs = nullptr) {
  double worst = 0.0, worst_abs = 0.0;
  bool same = true;
  for (std::size_t f = 0; f < ref.size(); ++f) {
    double diff = 0.0, scale = 0.0;
    for (std::size_t i = 0; i < ref[f].size(); ++i) {
      const double x = a[f][i], y = ref[f][i];
      if (std::isnan(x) || std::isnan(y)) diff = std::numeric_limits<double>::infinity();
      diff = std::max(diff, std::abs(x - y));
      scale = std::max(scale, std::abs(y));
      same = same && a[f][i] == ref[f][i];
    }
    worst = std::max(worst, diff / std::max(scale, 1e-30));
    worst_abs = std::max(worst_abs, diff);
  }
  if (bitwise) *bitwise = same;
  if (max_abs) *max_abs = std::max(*max_abs, worst_abs);
  return worst;
}

// Raw field file of make_test_models.py: int32 nlev, int32 ncol, then (ncol, nlev) float32.
// ncol < 0 takes the file's column count (and sets ncol); otherwise the file must agree.
std::vector<float> read_field(const std::string &path, int64_t nlev, int64_t &ncol) {
  std::ifstream f(path, std::ios::binary);
  int32_t dims[2] = {0, 0};
  f.read(reinterpret_cast<char *>(dims), sizeof dims);
  if (f && ncol < 0) ncol = dims[1];
  std::vector<float> x(static_cast<std::size_t>(std::max<int64_t>(ncol, 0) * nlev));
  if (!f || dims[0] != nlev || dims[1] != ncol ||
      !f.read(reinterpret_cast<char *>(x.data()), static_cast<std::streamsize>(x.size() * sizeof(float))))
    throw std::runtime_error("cannot read " + path + " as a (" + std::to_string(nlev) + ", " + std::to_string(ncol) +
                             ") field");
  return x;
}

struct Timing {
  double median_us = 0, min_us = 0;
  std::size_t n = 0;
};

// Warm-up first: TorchScript's profiling executor specialises (and on CUDA may fuse and
// compile) during the first calls at a new shape.
Timing time_calls(const std::function<void()> &f, double seconds) {
  auto since = [](Clock::time_point t) { return std::chrono::duration<double>(Clock::now() - t).count(); };
  const auto warm = Clock::now();
  for (int i = 0; i < 5 || since(warm) < 0.2 * seconds; ++i) f();
  std::vector<double> t;
  const auto start = Clock::now();
  while ((t.size() < 5 || since(start) < seconds) && t.size() < 2000) {
    const auto t0 = Clock::now();
    f();
    t.push_back(std::chrono::duration<double, std::micro>(Clock::now() - t0).count());
  }
  std::sort(t.begin(), t.end());
  const std::size_t n = t.size();
  return {n % 2 ? t[n / 2] : 0.5 * (t[n / 2 - 1] + t[n / 2]), t[0], n};
}

// The bridge's ceiling: the same file in plain libtorch, same host arrays in and out.
class Plain {
 public:
  Plain(const std::string &path, const Spec &s, torch::Device d) : s_(s), dev_(d), module_(torch::jit::load(path, d)) {
    module_.eval();
  }
  // Host arrays in, host arrays out: what a host model would write without the bridge.
  void call(const Arrays &in, Arrays &out, int64_t ncol) {
    std::vector<torch::IValue> args;
    for (std::size_t i = 0; i < s_.in.size(); ++i)
      args.emplace_back(host(const_cast<float *>(in[i].data()), ncol, s_.in[i].nlev).to(dev_));
    c10::InferenceMode guard;
    const auto outs = outputs(module_.forward(std::move(args)));
    for (std::size_t o = 0; o < outs.size(); ++o)
      host(out[o].data(), ncol, s_.out[o].nlev).copy_(s_.ens > 1 ? outs[o].mean(0) : outs[o]);  // D2H syncs
  }
  // Inputs already on the device, outputs left there: the compute alone.
  std::function<void()> device_only(const Arrays &in, int64_t ncol) {
    std::vector<torch::IValue> args;
    for (std::size_t i = 0; i < s_.in.size(); ++i)
      args.emplace_back(host(const_cast<float *>(in[i].data()), ncol, s_.in[i].nlev).to(dev_).clone());
    return [this, args]() {
      c10::InferenceMode guard;
      module_.forward(args);
      torch::cuda::synchronize(dev_.index());
    };
  }

 private:
  static torch::Tensor host(float *p, int64_t ncol, int64_t nlev) {
    return torch::from_blob(p, {ncol, nlev}, torch::kFloat32);
  }
  static std::vector<torch::Tensor> outputs(const torch::IValue &r) {
    if (r.isTensor()) return {r.toTensor()};
    std::vector<torch::Tensor> v;
    for (const auto &x : r.toTupleRef().elements()) v.push_back(x.toTensor());
    return v;
  }
  const Spec &s_;
  torch::Device dev_;
  torch::jit::Module module_;
};

struct Mem {
  int64_t rss_kib = -1;
  int64_t allocated = -1, reserved = -1;  // CUDA caching allocator, bytes
  int64_t device_used = -1;               // cudaMemGetInfo total - free, bytes
};

Mem sample_memory(const Dev &d) {
  Mem m;
  long pages = 0, resident = 0;
  if (std::ifstream statm("/proc/self/statm"); statm >> pages >> resident)
    m.rss_kib = resident * (sysconf(_SC_PAGESIZE) / 1024);
  if (d.kind != PL_DEVICE_CUDA) return m;
  torch::cuda::synchronize(d.index);
#ifndef GPUKIT_NO_ALLOC_STATS
  if (auto *a = dynamic_cast<c10::DeviceAllocator *>(c10::GetAllocator(c10::kCUDA))) {
    const auto st = a->getDeviceStats(static_cast<c10::DeviceIndex>(d.index));
    m.allocated = st.allocated_bytes[0].current;  // [0]: the aggregate over pools
    m.reserved = st.reserved_bytes[0].current;
  }
#endif
  // libcudart is loaded by libtorch_cuda; looking it up keeps the kit free of CUDA headers.
  using MemGetInfo = int (*)(std::size_t *, std::size_t *);
  if (auto f = reinterpret_cast<MemGetInfo>(dlsym(RTLD_DEFAULT, "cudaMemGetInfo"))) {
    std::size_t free = 0, total = 0;
    if (f(&free, &total) == 0) m.device_used = static_cast<int64_t>(total - free);
  }
  return m;
}

json to_json(const Mem &m) {
  return {{"rss_kib", m.rss_kib},
          {"allocator_allocated_bytes", m.allocated},
          {"allocator_reserved_bytes", m.reserved},
          {"device_used_bytes", m.device_used}};
}

std::string precision_name(at::Float32MatmulPrecision p) {
  switch (p) {
    case at::Float32MatmulPrecision::HIGHEST:
      return "highest";
    case at::Float32MatmulPrecision::HIGH:
      return "high";
    default:
      return "medium";
  }
}

class Report {
 public:
  explicit Report(std::string path) : path_(std::move(path)) {}
  json root = {{"checks", json::array()}, {"timings", json::array()}};

  void check(const std::string &name, bool pass, json detail) {
    std::string shown = detail.dump();
    if (shown.size() > 200) shown = shown.substr(0, 197) + "...";
    std::printf("%-4s %-34s %s\n", pass ? "ok" : "FAIL", name.c_str(), shown.c_str());
    json entry = {{"name", name}, {"status", pass ? "pass" : "FAIL"}};
    entry.update(detail);
    failed_ = failed_ || !pass;
    root["checks"].push_back(entry);
    save();
  }
  void skip(const std::string &name, const std::string &why) {
    root["checks"].push_back({{"name", name}, {"status", "skipped"}, {"why", why}});
    std::printf("%-4s %-34s %s\n", "skip", name.c_str(), why.c_str());
    save();
  }
  // Runs one check body; an unexpected bridge status or exception fails that check only.
  void guard(const std::string &name, const std::function<void()> &body) {
    try {
      body();
    } catch (const std::exception &e) {
      check(name, false, {{"error", e.what()}});
    }
  }
  // Written after every check, so a crash still leaves what was measured.
  void save() {
    root["ok"] = !failed_;
    std::ofstream(path_) << root.dump(2) << "\n";
  }
  bool failed() const { return failed_; }

 private:
  std::string path_;
  bool failed_ = false;
};

struct Kit {
  Kit(Options o, Dev t) : opt(std::move(o)), target(std::move(t)), rep(opt.json_path) {}
  Options opt;
  Dev cpu{PL_DEVICE_CPU, 0, "cpu"};
  Dev target;  // cuda:0, or cpu under --cpu-only
  Report rep;
  std::string path(const std::string &kind) const { return opt.models + "/" + kind + ".pt"; }
};

// A bad device is an error status with a message, never a crash; broken files on the
// device load path too.
void check_errors(Kit &k) {
  const int n = pl_cuda_device_count();
  auto expect = [&](const std::string &name, const std::string &file, int kind, int index, int want) {
    pl_handle h = 123;
    const int st = pl_model_load(file.c_str(), kind, index, &h);
    const std::string msg = pl_last_error();
    if (st == PL_OK) pl_model_free(h);
    k.rep.check(name, st == want && h == 0 && !msg.empty(), {{"got", st}, {"expected", want}, {"message", msg}});
  };
  const int bad_index = std::max(7, n);
  expect("error: load on cuda:" + std::to_string(bad_index), k.path("named"), PL_DEVICE_CUDA, bad_index, PL_ERR_DEVICE);
  expect("error: load on cuda:-1", k.path("named"), PL_DEVICE_CUDA, -1, PL_ERR_DEVICE);
  if (n == 0) expect("error: cuda:0 without CUDA", k.path("named"), PL_DEVICE_CUDA, 0, PL_ERR_DEVICE);
  expect("error: corrupt file on " + k.target.name, k.opt.models + "/corrupt.pt", k.target.kind, k.target.index,
         PL_ERR_LOAD);
  expect("error: no metadata on " + k.target.name, k.opt.models + "/no_metadata.pt", k.target.kind, k.target.index,
         PL_ERR_METADATA);
  k.rep.guard("error: load after errors", [&] {
    Handle h = load(k.path("named"), k.target);
    k.rep.check("error: load after errors", h.get() != 0, {{"device", k.target.name}});
  });
}

// The device against PyTorch's own outputs of the fixture (written by make_test_models.py).
void check_reference(Kit &k) {
  for (const std::string kind : {"simple", "named", "ensemble"}) {
    const std::string name = "reference: " + kind + " on " + k.target.name;
    k.rep.guard(name, [&] {
      Handle h = load(k.path(kind), k.target);
      const Spec s = spec_of(h);
      const std::string stem = k.opt.models + "/" + kind;
      int64_t ncol = -1;  // the fixture's, from its files
      Arrays in, want;
      for (const auto &f : s.in) in.push_back(read_field(stem + "_in_" + f.name + ".bin", f.nlev, ncol));
      for (const auto &f : s.out) want.push_back(read_field(stem + "_out_" + f.name + "_mean.bin", f.nlev, ncol));
      Arrays got = zeros(s.out, ncol);
      call(h, s, in, got, ncol);
      double rel = max_rel(got, want);
      json d = {{"ncol", ncol}, {"rel_mean", rel}, {"tol", kDeviceTol}};
      if (s.ens > 1) {  // the spread is reduced on the device too
        Arrays spread;
        for (const auto &f : s.out) spread.push_back(read_field(stem + "_out_" + f.name + "_spread.bin", f.nlev, ncol));
        get_outputs(h, s, got, ncol, PL_SPREAD);
        d["rel_spread"] = max_rel(got, spread);
        rel = std::max(rel, d["rel_spread"].get<double>());
      }
      k.rep.check(name, rel <= kDeviceTol, d);
    });
  }
}

// The same file on the CPU and on the device, identical inputs, three batch sizes.
void check_device_vs_cpu(Kit &k) {
  for (const auto &kind : kModels) {
    for (const int64_t ncol : {int64_t{1}, int64_t{64}, int64_t{4096}}) {
      const std::string name = k.target.name + " vs cpu: " + kind + " ncol " + std::to_string(ncol);
      k.rep.guard(name, [&] {
        Handle hc = load(k.path(kind), k.cpu), hd = load(k.path(kind), k.target);
        const Spec s = spec_of(hc);
        const Arrays in = random_inputs(s, ncol, static_cast<unsigned>(ncol) + 17);
        Arrays yc = zeros(s.out, ncol), yd = yc;
        double rel = 0.0, abs = 0.0;
        for (int rep = 0; rep < 3; ++rep) {  // the first calls run unoptimised graphs, later ones fused
          call(hc, s, in, yc, ncol);
          call(hd, s, in, yd, ncol);
          rel = std::max(rel, max_rel(yd, yc, nullptr, &abs));
          if (s.ens > 1) {
            for (int stat : {PL_SPREAD, PL_MEMBER}) {
              get_outputs(hc, s, yc, ncol, stat, s.ens - 1);
              get_outputs(hd, s, yd, ncol, stat, s.ens - 1);
              rel = std::max(rel, max_rel(yd, yc, nullptr, &abs));
            }
          }
        }
        k.rep.check(
            name, rel <= kDeviceTol,
            {{"model", kind}, {"ncol", ncol}, {"max_rel_diff", rel}, {"max_abs_diff", abs}, {"tol", kDeviceTol}});
      });
    }
  }
}

// Informational: what TF32 matmuls would cost in accuracy and buy in time (not a check).
// Last, because it changes a process-wide setting. libtorch's default is full fp32 for cuBLAS
// unless TORCH_ALLOW_TF32_CUBLAS_OVERRIDE is set; the bridge itself sets nothing.
void tf32_info(Kit &k) {
  json info;
  const char *env = std::getenv("TORCH_ALLOW_TF32_CUBLAS_OVERRIDE");
  info["TORCH_ALLOW_TF32_CUBLAS_OVERRIDE"] = env ? env : "";
  try {
    info["float32_matmul_precision"] = precision_name(at::globalContext().float32MatmulPrecision());
    info["allow_tf32_cublas"] = at::globalContext().allowTF32CuBLAS();
    if (k.target.kind == PL_DEVICE_CUDA) {
      constexpr int64_t ncol = 4096;
      Handle hc = load(k.path("mfrpn_size"), k.cpu), hd = load(k.path("mfrpn_size"), k.target);
      const Spec s = spec_of(hc);
      const Arrays in = random_inputs(s, ncol, 4242);
      Arrays yc = zeros(s.out, ncol), yd = yc;
      call(hc, s, in, yc, ncol);
      const auto before = at::globalContext().float32MatmulPrecision();
      for (const char *p : {"highest", "high"}) {
        at::globalContext().setFloat32MatmulPrecision(p);
        const Timing t = time_calls([&] { call(hd, s, in, yd, ncol); }, k.opt.time_s);
        info[std::string("mfrpn_size_4096_") + p] = {{"max_rel_diff_vs_cpu", max_rel(yd, yc)},
                                                     {"median_us", t.median_us}};
      }
      at::globalContext().setFloat32MatmulPrecision(precision_name(before));
    }
  } catch (const std::exception &e) {
    info["error"] = e.what();
  }
  k.rep.root["tf32"] = info;
  std::printf("info tf32                               %s\n", info.dump().c_str());
  k.rep.save();
}

// The bridge's opt-in reduced precision at batch 4096: its accuracy guard (the first forward
// keeps the reduced precision exactly when it says so, and the error it measured is reported)
// and its time against float32 through the bridge. TF32 is refused on a CPU target.
void check_precision(Kit &k) {
  constexpr int64_t ncol = 4096;
  constexpr double kTolerance = 0.05;  // generous: what is measured here is the error itself
  const bool cuda = k.target.kind == PL_DEVICE_CUDA;
  for (const auto &kind : {std::string("ensemble"), std::string("mfrpn_size")}) {
    Handle h32 = load(k.path(kind), k.target);
    const Spec s = spec_of(h32);
    const Arrays in = random_inputs(s, ncol, 99);
    Arrays y32 = zeros(s.out, ncol), y = y32;
    call(h32, s, in, y32, ncol);
    const Timing t32 = time_calls([&] { call(h32, s, in, y32, ncol); }, k.opt.time_s);
    for (const int precision : {PL_PRECISION_BF16, PL_PRECISION_TF32}) {
      const std::string label = precision == PL_PRECISION_BF16 ? "bf16" : "tf32";
      const std::string name = "precision " + label + ": " + kind + " on " + k.target.name;
      k.rep.guard(name, [&] {
        Handle h = load(k.path(kind), k.target);
        const int set = pl_model_set_precision(h.get(), precision, kTolerance);
        if (precision == PL_PRECISION_TF32 && !cuda) {
          k.rep.check(name, set == PL_ERR_DEVICE, {{"status", set}, {"expected", "PL_ERR_DEVICE on a CPU model"}});
          return;
        }
        ok(set, "set_precision " + label);
        const int st = call(h, s, in, y, ncol);
        int in_effect = -1;
        double error = -1.0;
        ok(pl_model_precision(h.get(), &in_effect, &error), "precision");
        const bool kept = in_effect == precision;
        json d = {{"model", kind},
                  {"ncol", ncol},
                  {"tolerance", kTolerance},
                  {"kept", kept},
                  {"rel_l2_error", error},
                  {"max_rel_diff_vs_fp32", max_rel(y, y32)},
                  {"fp32_median_us", t32.median_us}};
        if (kept) {
          const Timing t = time_calls([&] { call(h, s, in, y, ncol); }, k.opt.time_s);
          d["median_us"] = t.median_us;
          d["speedup_vs_fp32"] = t32.median_us / t.median_us;
        }
        // The guard keeps the precision exactly when its error is within the tolerance, and
        // warns exactly when it does not.
        k.rep.check(name, error >= 0 && kept == (error <= kTolerance) && (st == PL_WARN_PRECISION) == !kept, d);
      });
    }
  }
}

// NaN/Inf screening with the model on the device: flags, zeroed outputs, untouched others;
// and screening off lets the NaN through.
void check_screening(Kit &k) {
  const std::string name = "screening on " + k.target.name;
  k.rep.guard(name, [&] {
    constexpr int64_t ncol = 64, bad_a = 3, bad_b = 10;
    Handle h = load(k.path("named"), k.target);
    const Spec s = spec_of(h);
    if (s.in.size() != 3) throw std::runtime_error("named.pt: expected the inputs T, q, ps");
    const Arrays in = random_inputs(s, ncol, 99);
    Arrays clean = zeros(s.out, ncol), got = clean;
    call(h, s, in, clean, ncol);
    // T as float64 with a NaN (the converting path), q as float32 with an Inf.
    std::vector<double> t64(in[0].begin(), in[0].end());
    t64[bad_a * s.in[0].nlev + 2] = std::nan("");
    std::vector<float> q = in[1];
    q[bad_b * s.in[1].nlev] = std::numeric_limits<float>::infinity();
    auto set_bad = [&] {
      ok(set_field(h, s.in[0], t64.data(), PL_FLOAT64, ncol), "set T");
      ok(set_field(h, s.in[1], q.data(), PL_FLOAT32, ncol), "set q");
      ok(set_field(h, s.in[2], in[2].data(), PL_FLOAT32, ncol), "set ps");
    };
    auto column = [&](const Arrays &y, int64_t c, const std::function<bool(float)> &pred) {
      for (std::size_t o = 0; o < s.out.size(); ++o)
        for (int64_t l = 0; l < s.out[o].nlev; ++l)
          if (!pred(y[o][c * s.out[o].nlev + l])) return false;
      return true;
    };
    // Compare the good columns only: bad ones replaced by the clean run's values.
    auto good_rel = [&](Arrays y) {
      for (std::size_t o = 0; o < s.out.size(); ++o)
        for (int64_t c : {bad_a, bad_b})
          for (int64_t l = 0; l < s.out[o].nlev; ++l) y[o][c * s.out[o].nlev + l] = clean[o][c * s.out[o].nlev + l];
      return max_rel(y, clean);
    };

    set_bad();
    int64_t n_bad = -1;
    const int st = pl_forward(h.get(), &n_bad);
    get_outputs(h, s, got, ncol);
    std::vector<int32_t> flags(ncol, -1);
    ok(pl_bad_columns(h.get(), flags.data(), ncol), "bad_columns");
    bool flags_ok = true;
    for (int64_t c = 0; c < ncol; ++c) flags_ok = flags_ok && flags[c] == (c == bad_a || c == bad_b ? 1 : 0);
    const bool zeroed =
        column(got, bad_a, [](float v) { return v == 0.0f; }) && column(got, bad_b, [](float v) { return v == 0.0f; });
    const double rel = good_rel(got);
    k.rep.check(name, st == PL_WARN_BAD_INPUT && n_bad == 2 && flags_ok && zeroed && rel <= kSameTol,
                {{"forward_status", st},
                 {"n_bad", n_bad},
                 {"flags_ok", flags_ok},
                 {"bad_columns_zero", zeroed},
                 {"good_columns_rel_diff", rel}});

    const std::string off = "screening off on " + k.target.name;
    ok(pl_model_set_screening(h.get(), 0), "screening off");
    set_bad();
    const int st_off = pl_forward(h.get(), &n_bad);
    get_outputs(h, s, got, ncol);
    ok(pl_model_set_screening(h.get(), 1), "screening on");
    const bool propagated = column(got, bad_a, [](float v) { return !std::isfinite(v); });
    k.rep.check(off, st_off == PL_OK && n_bad == 0 && propagated && good_rel(got) <= kSameTol,
                {{"forward_status", st_off},
                 {"n_bad", n_bad},
                 {"nan_column_nonfinite", propagated},
                 {"good_columns_rel_diff", good_rel(got)}});
  });
}

// Clones share the weights (no new device memory) and give the original's outputs, also
// when several host threads call their own clone at once.
void check_clones(Kit &k) {
  constexpr int nthreads = 4, niter = 20;
  constexpr int64_t ncol = 256;
  const bool cuda = k.target.kind == PL_DEVICE_CUDA;
  const std::string name = "clones on " + k.target.name;
  k.rep.guard(name, [&] {
    const Mem m0 = sample_memory(k.target);
    Handle base = load(k.path("mfrpn_size"), k.target);
    const Spec s = spec_of(base);
    const Mem m1 = sample_memory(k.target);
    std::vector<Handle> clones;
    for (int t = 0; t < nthreads; ++t) clones.push_back(clone(base));
    const Mem m2 = sample_memory(k.target);
    std::vector<Arrays> in, ref;
    for (int t = 0; t < nthreads; ++t) {  // distinct inputs per thread, so crossed outputs show
      in.push_back(random_inputs(s, ncol, 1000u + t));
      ref.push_back(zeros(s.out, ncol));
      call(base, s, in[t], ref[t], ncol);
    }
    double rel = 0.0;
    bool bitwise = true;
    for (int t = 0; t < nthreads; ++t) {
      Arrays y = zeros(s.out, ncol);
      bool same = false;
      call(clones[t], s, in[t], y, ncol);
      rel = std::max(rel, max_rel(y, ref[t], &same));
      bitwise = bitwise && same;
    }
    const int64_t weights = m1.allocated - m0.allocated, growth = m2.allocated - m1.allocated;
    json d = {{"clone_rel_diff", rel}, {"bitwise", bitwise}};
    bool shared = true;
    if (cuda && m0.allocated >= 0) {
      d["weights_bytes"] = weights;
      d["clone_growth_bytes"] = growth;
      shared = growth < weights / 2;  // a copy of the weights would add about `weights`
    }
    k.rep.check(name, rel <= kSameTol && shared, d);

    const std::string tname = "threads: " + std::to_string(nthreads) + " clones on " + k.target.name;
    std::vector<int> mismatches(nthreads, 0), failures(nthreads, 0);
    std::vector<double> worst(nthreads, 0.0);
    std::vector<std::thread> pool;
    for (int t = 0; t < nthreads; ++t)
      pool.emplace_back([&, t] {
        Arrays y = zeros(s.out, ncol);
        for (int it = 0; it < niter; ++it) {
          try {
            call(clones[t], s, in[t], y, ncol);
            const double r = max_rel(y, ref[t]);
            worst[t] = std::max(worst[t], r);
            mismatches[t] += r > kSameTol;
          } catch (const std::exception &) {
            ++failures[t];
          }
        }
      });
    for (auto &th : pool) th.join();
    int nm = 0, nf = 0;
    for (int t = 0; t < nthreads; ++t) nm += mismatches[t], nf += failures[t];
    k.rep.check(tname, nm == 0 && nf == 0,
                {{"calls", nthreads * niter},
                 {"mismatches", nm},
                 {"failures", nf},
                 {"max_rel_diff", *std::max_element(worst.begin(), worst.end())}});
  });
}

// Memory stays flat over many calls through every input path (float32, float64, screened)
// and every statistic of an ensemble output.
void check_memory(Kit &k) {
  const std::string name = "memory: " + std::to_string(k.opt.mem_calls) + " calls on " + k.target.name;
  k.rep.guard(name, [&] {
    constexpr int64_t ncol = 64;
    constexpr int64_t max_rss_kib = 2048;         // as test_memory.f90: ~200 B per call leaked fails
    constexpr int64_t max_alloc_bytes = 1 << 20;  // one kept output per call would be ~40 MiB
    Handle h = load(k.path("ensemble"), k.target);
    const Spec s = spec_of(h);
    const Arrays in = random_inputs(s, ncol, 5);
    std::vector<double> t64(in[0].begin(), in[0].end());
    std::vector<float> t_nan = in[0];
    t_nan[7] = std::nan("");  // column 0, level 7
    Arrays out = zeros(s.out, ncol);
    int failures = 0;
    auto one = [&](int i) {
      const void *t = i % 3 == 0   ? static_cast<const void *>(in[0].data())
                      : i % 3 == 1 ? static_cast<const void *>(t64.data())
                                   : t_nan.data();
      ok(set_field(h, s.in[0], t, i % 3 == 1 ? PL_FLOAT64 : PL_FLOAT32, ncol), "set T");
      for (std::size_t f = 1; f < s.in.size(); ++f)
        ok(set_field(h, s.in[f], in[f].data(), PL_FLOAT32, ncol), "set input");
      int64_t n_bad = 0;
      const int st = pl_forward(h.get(), &n_bad);
      if (st != (i % 3 == 2 ? PL_WARN_BAD_INPUT : PL_OK)) ++failures;
      get_outputs(h, s, out, ncol, i % 4 == 3 ? PL_SPREAD : PL_MEAN);
    };
    for (int i = 0; i < 500; ++i) one(i);
    const Mem a = sample_memory(k.target);
    for (int i = 0; i < k.opt.mem_calls; ++i) one(i);
    const Mem b = sample_memory(k.target);
    const int64_t rss = b.rss_kib - a.rss_kib;
    json d = {{"ncol", ncol}, {"failures", failures}, {"rss_growth_kib", rss}};
    bool pass = failures == 0 && a.rss_kib > 0 && rss <= max_rss_kib;
    if (a.allocated >= 0) {
      d["allocator_allocated_growth_bytes"] = b.allocated - a.allocated;
      d["allocator_reserved_growth_bytes"] = b.reserved - a.reserved;
      pass = pass && b.allocated - a.allocated <= max_alloc_bytes;
    }
    if (a.device_used >= 0) d["device_used_growth_bytes"] = b.device_used - a.device_used;
    d["before"] = to_json(a);
    d["after"] = to_json(b);
    k.rep.check(name, pass, d);
  });
}

// Per-call time through the bridge against plain libtorch on the same file (reported only).
void timings(Kit &k) {
  const bool cuda = k.target.kind == PL_DEVICE_CUDA;
  std::printf("\n%-11s %6s %12s %12s %12s %8s   (median us per call on %s)\n", "model", "ncol", "bridge", "libtorch",
              "device-only", "ratio", k.target.name.c_str());
  for (const auto &kind : kModels) {
    for (const int64_t ncol : {int64_t{1}, int64_t{4096}}) {
      try {
        Handle h = load(k.path(kind), k.target);
        const Spec s = spec_of(h);
        Plain plain(k.path(kind), s,
                    cuda ? torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(k.target.index))
                         : torch::Device(torch::kCPU));
        const Arrays in = random_inputs(s, ncol, 7);
        Arrays out = zeros(s.out, ncol);
        const Timing b = time_calls([&] { call(h, s, in, out, ncol); }, k.opt.time_s);
        const Timing p = time_calls([&] { plain.call(in, out, ncol); }, k.opt.time_s);
        json row = {{"model", kind},
                    {"ncol", ncol},
                    {"device", k.target.name},
                    {"bridge", {{"median_us", b.median_us}, {"min_us", b.min_us}, {"n", b.n}}},
                    {"libtorch", {{"median_us", p.median_us}, {"min_us", p.min_us}, {"n", p.n}}},
                    {"ratio_bridge_over_libtorch", b.median_us / p.median_us}};
        char dev_col[32] = "-";
        if (cuda) {
          const Timing d = time_calls(plain.device_only(in, ncol), k.opt.time_s);
          row["libtorch_device_only"] = {{"median_us", d.median_us}, {"min_us", d.min_us}, {"n", d.n}};
          std::snprintf(dev_col, sizeof dev_col, "%.1f", d.median_us);
        }
        k.rep.root["timings"].push_back(row);
        std::printf("%-11s %6lld %12.1f %12.1f %12s %8.2f\n", kind.c_str(), static_cast<long long>(ncol), b.median_us,
                    p.median_us, dev_col, b.median_us / p.median_us);
      } catch (const std::exception &e) {
        k.rep.root["timings"].push_back({{"model", kind}, {"ncol", ncol}, {"error", e.what()}});
        std::printf("%-11s %6lld error: %s\n", kind.c_str(), static_cast<long long>(ncol), e.what());
      }
      k.rep.save();
    }
  }
  std::printf(
      "bridge: set inputs + forward + get outputs; libtorch: from_blob -> to(device) -> forward -> copy to host;\n"
      "device-only: inputs resident, forward + synchronize. ratio = bridge / libtorch.\n\n");
}

Options parse(int argc, char **argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw std::runtime_error(a + " needs a value");
      return argv[++i];
    };
    if (a == "--models")
      o.models = value();
    else if (a == "--json")
      o.json_path = value();
    else if (a == "--cpu-only")
      o.cpu_only = true;
    else if (a == "--time")
      o.time_s = std::stod(value());
    else if (a == "--mem-calls")
      o.mem_calls = std::stoi(value());
    else
      throw std::runtime_error("unknown argument " + a);
  }
  if (o.models.empty() || o.json_path.empty()) throw std::runtime_error("--models DIR and --json FILE are required");
  return o;
}

}  // namespace

int main(int argc, char **argv) {
  Options opt;
  try {
    opt = parse(argc, argv);
  } catch (const std::exception &e) {
    std::cerr << "gpu_check: " << e.what()
              << "\nusage: gpu_check --models DIR --json FILE [--cpu-only] [--time S] [--mem-calls N]\n";
    return 2;
  }
  const int ndev = pl_cuda_device_count();
  const bool cuda = !opt.cpu_only && ndev > 0;
  Kit k(opt, cuda ? Dev{PL_DEVICE_CUDA, 0, "cuda:0"} : Dev{PL_DEVICE_CPU, 0, "cpu"});
  // One intra-op thread for the bridge and for plain libtorch alike (DESIGN: timings), and so
  // the threaded clone check runs the serial reference's kernels.
  ok(pl_set_num_threads(1), "set_num_threads");
  at::set_num_threads(1);
  k.rep.root["env"] = {{"torch", TORCH_VERSION},
                       {"bridge", pl_version()},
                       {"cuda_devices", ndev},
                       {"target", k.target.name},
                       {"cpu_only", !cuda}};
  std::printf("gpu_check: libtorch %s, bridge %s, %d CUDA device(s), target %s\n", TORCH_VERSION, pl_version(), ndev,
              k.target.name.c_str());
  if (!opt.cpu_only && ndev == 0)
    k.rep.check("cuda available", false,
                {{"error", "no CUDA device visible to libtorch (use --cpu-only on a CPU machine)"}});
  if (!cuda)
    k.rep.skip("cuda: device parts",
               "CPU only: the 'cuda' checks compare CPU with CPU; device memory and device-only timing skipped");

  check_errors(k);
  check_reference(k);
  check_device_vs_cpu(k);
  check_screening(k);
  check_clones(k);
  check_memory(k);
  timings(k);
  check_precision(k);
  tf32_info(k);

  int failed = 0;
  for (const auto &c : k.rep.root["checks"]) failed += c["status"] == "FAIL";
  std::printf("gpu_check: %s (%d failed of %zu checks); JSON in %s\n", failed ? "FAILED" : "all checks passed", failed,
              k.rep.root["checks"].size(), opt.json_path.c_str());
  k.rep.save();
  return k.rep.failed() ? 1 : 0;
}
