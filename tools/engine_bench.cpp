// Inference alone, no decoding: images/s of the prepared model for each streams x threads x batch
// given, so that featurize's defaults are chosen by measurement (docs/benchmarks.md).
//
//   build/tools/orchard-engine-bench MODEL.ov [--seconds 8] STREAMS:THREADS:BATCH[:any] ...
//
// STREAMS threads call Embedder::embed at once (load_embedder's concurrency), each call running on
// THREADS cores, with BATCH images of fixed random pixels per call, the graph compiled for BATCH
// (as featurize does) or, with ":any", for any batch size. Each point warms up with one
// call per stream, then counts the images embedded in --seconds.
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "orchard/error.hpp"
#include "orchard/model/model.hpp"
#include "orchard/model/shape.hpp"

namespace {
using orchard::model::kEmbeddingDim;
using orchard::model::kInputSize;
constexpr std::size_t kPixels = 3ull * kInputSize * kInputSize;

double images_per_second(const std::string& model, int streams, int threads, int batch, bool fixed, double seconds) {
  auto embedder = orchard::model::load_embedder(model, {streams, threads, fixed ? batch : 0});
  std::vector<float> in(kPixels * batch);
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> pixel(-1.f, 1.f);
  for (auto& v : in) v = pixel(rng);
  std::atomic<long> images{0};
  std::atomic<bool> counting{false}, stop{false};
  std::vector<std::thread> callers;
  for (int s = 0; s < streams; ++s)
    callers.emplace_back([&] {
      std::vector<float> out(static_cast<std::size_t>(kEmbeddingDim) * batch);
      embedder->embed(in.data(), batch, out.data());  // warm-up
      while (!counting) std::this_thread::yield();
      while (!stop) {
        embedder->embed(in.data(), batch, out.data());
        images += batch;
      }
    });
  std::this_thread::sleep_for(std::chrono::milliseconds(500));
  const auto t0 = std::chrono::steady_clock::now();
  counting = true;
  std::this_thread::sleep_for(std::chrono::duration<double>(seconds));
  const long counted = images.load();
  const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  stop = true;
  for (auto& t : callers) t.join();
  return counted / wall;
}
}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: %s MODEL.ov [--seconds S] STREAMS:THREADS:BATCH[:any] ...\n", argv[0]);
    return 2;
  }
  double seconds = 8;
  std::vector<std::string> points;
  for (int i = 2; i < argc; ++i) {
    if (std::string(argv[i]) == "--seconds" && i + 1 < argc) seconds = std::atof(argv[++i]);
    else points.emplace_back(argv[i]);
  }
  std::printf("%7s %7s %5s %5s %9s\n", "streams", "threads", "batch", "shape", "images/s");
  try {
    for (const auto& p : points) {
      int streams = 0, threads = 0, batch = 0;
      const bool fixed = p.find(":any") == std::string::npos;
      if (std::sscanf(p.c_str(), "%d:%d:%d", &streams, &threads, &batch) != 3 || streams < 1 || threads < 1 || batch < 1) {
        std::fprintf(stderr, "%s: expected STREAMS:THREADS:BATCH, e.g. 2:1:2\n", p.c_str());
        return 2;
      }
      std::printf("%7d %7d %5d %5s %9.1f\n", streams, threads, batch, fixed ? "fixed" : "any",
                  images_per_second(argv[1], streams, threads, batch, fixed, seconds));
      std::fflush(stdout);
    }
  } catch (const orchard::Error& e) {
    std::fprintf(stderr, "orchard-engine-bench: %s\n", e.what());
    return 1;
  }
  return 0;
}
