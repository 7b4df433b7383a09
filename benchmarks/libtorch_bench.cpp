// The bridge's ceiling: the same per-call work as bridge_bench, in plain C++ libtorch.
// Per call: wrap each host input buffer with from_blob (no copy), forward under
// c10::InferenceMode, copy each output into its host buffer.
//
// usage: libtorch_bench MODEL DATA_DIR NCOL SECONDS MIN_ITERS WARMUP_S OUT_DIR
// (files as in bridge_bench.f90). Prints one JSON line:
// {"impl": "cpp", "ncol", "n", "median_us", "min_us", "mean_us", "minflt_per_call"}.
#include <ATen/Parallel.h>
#include <sys/resource.h>
#include <torch/script.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

namespace {

long minor_faults() {
  rusage r{};
  return getrusage(RUSAGE_SELF, &r) == 0 ? r.ru_minflt : 0;
}

struct Field {
  std::string name;
  int64_t nlev = 0;
  std::vector<float> data;  // (ncol, nlev) row-major == Fortran (nlev, ncol)
};

void read_fields(const std::string &dir, int64_t ncol, std::vector<Field> &in, std::vector<Field> &out) {
  std::ifstream f(dir + "/fields.txt");
  std::size_t n_in = 0, n_out = 0;
  if (!(f >> n_in >> n_out)) throw std::runtime_error("cannot read " + dir + "/fields.txt");
  in.resize(n_in);
  out.resize(n_out);
  for (auto *list : {&in, &out})
    for (auto &x : *list) {
      if (!(f >> x.name >> x.nlev)) throw std::runtime_error("bad line in " + dir + "/fields.txt");
      x.data.assign(static_cast<std::size_t>(ncol * x.nlev), 0.0f);
    }
  for (std::size_t i = 0; i < n_in; ++i) {
    const std::string p = dir + "/in_" + std::to_string(i + 1) + ".bin";
    std::ifstream b(p, std::ios::binary);
    const auto bytes = static_cast<std::streamsize>(in[i].data.size() * sizeof(float));
    if (!b.read(reinterpret_cast<char *>(in[i].data.data()), bytes)) throw std::runtime_error("cannot read " + p);
  }
}

}  // namespace

int main(int argc, char **argv) {
  if (argc < 8) {
    std::cerr << "usage: libtorch_bench MODEL DATA_DIR NCOL SECONDS MIN_ITERS WARMUP_S OUT_DIR\n";
    return 2;
  }
  try {
    const std::string model_path = argv[1], data_dir = argv[2], out_dir = argv[7];
    const int64_t ncol = std::stoll(argv[3]);
    const double seconds = std::stod(argv[4]);
    const long min_iters = std::stol(argv[5]);
    const double warmup = std::stod(argv[6]);

    // First, as in bridge_bench, so this buffer (mmapped) never sits among libtorch's heap
    // temporaries; filled now, so the timed loop takes no page faults for it.
    constexpr std::size_t max_iters = 2000000;
    std::vector<int64_t> times(max_iters, 0);
    at::set_num_threads(1);
    std::vector<Field> in, out;
    read_fields(data_dir, ncol, in, out);
    torch::jit::Module module = torch::jit::load(model_path, torch::kCPU);

    const auto opt = torch::TensorOptions().dtype(torch::kFloat32);
    auto one_call = [&]() {
      std::vector<torch::IValue> args;
      args.reserve(in.size());
      for (auto &x : in) args.emplace_back(torch::from_blob(x.data.data(), {ncol, x.nlev}, opt));
      c10::InferenceMode guard;
      torch::IValue result = module.forward(std::move(args));
      if (result.isTensor()) {
        torch::from_blob(out[0].data.data(), {ncol, out[0].nlev}, opt).copy_(result.toTensor());
      } else {
        const auto &elems = result.toTupleRef().elements();
        for (std::size_t o = 0; o < out.size(); ++o)
          torch::from_blob(out[o].data.data(), {ncol, out[o].nlev}, opt).copy_(elems[o].toTensor());
      }
    };

    using clock = std::chrono::steady_clock;
    const auto warm_start = clock::now();
    for (long i = 0; i < 3 || std::chrono::duration<double>(clock::now() - warm_start).count() < warmup; ++i)
      one_call();

    const long flt0 = minor_faults();
    const auto start = clock::now();
    double elapsed = 0.0;
    std::size_t n = 0;
    while ((elapsed < seconds || static_cast<long>(n) < min_iters) && n < max_iters) {
      const auto t0 = clock::now();
      one_call();
      const auto t1 = clock::now();
      times[n++] = std::chrono::duration_cast<std::chrono::nanoseconds>(t1 - t0).count();
      elapsed = std::chrono::duration<double>(t1 - start).count();
    }
    const long faults = minor_faults() - flt0;
    times.resize(n);

    for (std::size_t o = 0; o < out.size(); ++o) {
      const std::string p = out_dir + "/out_" + std::to_string(o + 1) + ".bin";
      std::ofstream b(p, std::ios::binary);
      b.write(reinterpret_cast<const char *>(out[o].data.data()),
              static_cast<std::streamsize>(out[o].data.size() * sizeof(float)));
      if (!b) throw std::runtime_error("cannot write " + p);
    }

    std::sort(times.begin(), times.end());
    const double median = n % 2 ? times[n / 2] : 0.5 * (times[n / 2 - 1] + times[n / 2]);
    const double mean = std::accumulate(times.begin(), times.end(), 0.0) / static_cast<double>(n);
    std::printf(
        "{\"impl\": \"cpp\", \"ncol\": %lld, \"n\": %zu, \"median_us\": %.3f, \"min_us\": %.3f, "
        "\"mean_us\": %.3f, \"minflt_per_call\": %.3f}\n",
        static_cast<long long>(ncol), n, median * 1e-3, times[0] * 1e-3, mean * 1e-3,
        static_cast<double>(faults) / static_cast<double>(n));
    return 0;
  } catch (const std::exception &e) {
    std::cerr << "libtorch_bench: " << e.what() << "\n";
    return 1;
  }
}
