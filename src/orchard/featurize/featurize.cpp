#include "orchard/featurize/featurize.hpp"

#include <ATen/Parallel.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "orchard/error.hpp"
#include "orchard/threads.hpp"
#include "orchard/image/decode.hpp"
#include "orchard/image/resize.hpp"
#include "orchard/model/mobilenet_v2.hpp"
#include "orchard/model/model.hpp"
#include "orchard/table/tables.hpp"

namespace orchard::featurize {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int kDim = model::kEmbeddingDim;
constexpr int kSide = model::kInputSize;
constexpr std::int64_t kPixels = 3 * kSide * kSide;

// Results of one shard while its batches are in flight.
struct ShardState {
  std::size_t begin = 0, end = 0;
  std::vector<float> values;        // (end-begin) x kDim
  std::vector<std::string> errors;  // empty = embedded
  std::atomic<std::size_t> remaining{0};
};

struct Batch {
  int shard;
  std::size_t begin, end;  // manifest item indices
};

class Job {
 public:
  Job(const dataset::Manifest& m, const storage::Location& in, const storage::Location& out,
      const std::string& model_pt, const Options& o)
      : manifest_(m), input_(in), features_(out.child("features")), errors_(out.child("errors")),
        embedder_(model_pt), options_(o) {}

  Summary run() {
    for (const auto& dir : {features_, errors_}) {
      storage::make_dirs(dir);
      remove_stale_temporaries(dir);
    }
    Summary s;
    s.images = static_cast<std::int64_t>(manifest_.items.size());
    s.shards = manifest_.num_shards();
    for (int sh = 0; sh < s.shards; ++sh) {
      if (storage::exists(features_.child(table::part_name(sh)))) { ++s.shards_skipped; continue; }
      auto [b, e] = manifest_.shard_range(sh);
      for (std::size_t i = b; i < e; i += options_.batch)
        batches_.push_back({sh, i, std::min(e, i + static_cast<std::size_t>(options_.batch))});
      todo_images_ += e - b;
    }
    const int threads = resolve_threads(options_.threads);
    const auto t0 = Clock::now();
    std::vector<std::thread> workers;
    for (int t = 0; t < threads; ++t) workers.emplace_back([this] { work(); });
    std::thread progress;
    const bool show = options_.progress && isatty(STDERR_FILENO);
    if (show) progress = std::thread([this, t0] { report_progress(t0); });
    for (auto& w : workers) w.join();
    {
      std::lock_guard lock(mu_);
      finished_ = true;
    }
    cv_.notify_all();
    if (progress.joinable()) progress.join();
    if (!fatal_.empty()) throw Error(fatal_);
    s.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    s.embedded = embedded_;
    s.failed = failed_;
    s.images_per_s = s.seconds > 0 ? (embedded_ + failed_) / s.seconds : 0;
    return s;
  }

 private:
  // Deletes part files a killed run left half-written (they never had their final name).
  static void remove_stale_temporaries(const storage::Location& dir) {
    arrow::fs::FileSelector sel;
    sel.base_dir = dir.path;
    for (const auto& f : storage::value_or_throw(dir.fs->GetFileInfo(sel), dir.path + ": cannot list"))
      if (f.IsFile() && f.base_name().find(".tmp-") != std::string::npos)
        storage::check(dir.fs->DeleteFile(f.path()), f.path() + ": cannot delete a stale temporary");
  }

  void work() {
    try {
      at::set_num_threads(1);  // parallelism comes from the workers: no OpenMP spinning on 2 cores
      auto input = at::empty({options_.batch, 3, kSide, kSide}, at::kFloat);
      std::vector<std::size_t> good;
      while (true) {
        const std::size_t b = next_.fetch_add(1);
        if (b >= batches_.size() || stop_) return;
        process(batches_[b], input, good);
        images_done_ += batches_[b].end - batches_[b].begin;
      }
    } catch (const c10::Error& e) {
      fail(std::string("inference failed: ") + e.what_without_backtrace());
    } catch (const std::exception& e) {
      fail(e.what());
    }
  }

  void fail(const std::string& why) {
    std::lock_guard lock(mu_);
    if (fatal_.empty()) fatal_ = why;
    stop_ = true;
  }

  std::shared_ptr<ShardState> shard_state(int sh) {
    std::lock_guard lock(mu_);
    auto& st = shards_[sh];
    if (!st) {
      st = std::make_shared<ShardState>();
      std::tie(st->begin, st->end) = manifest_.shard_range(sh);
      st->values.assign((st->end - st->begin) * kDim, 0.0f);
      st->errors.assign(st->end - st->begin, "");
      st->remaining = st->end - st->begin;
    }
    return st;
  }

  void process(const Batch& batch, at::Tensor& input, std::vector<std::size_t>& good) {
    auto st = shard_state(batch.shard);
    good.clear();
    float* in = input.data_ptr<float>();
    for (std::size_t i = batch.begin; i < batch.end; ++i) {
      const auto& item = manifest_.items[i];
      try {
        auto bytes = storage::read_file({input_.fs, item.path});
        auto rgb = image::decode_to_rgb({bytes->data(), static_cast<std::size_t>(bytes->size())});
        auto resized = image::resize_bicubic(rgb, kSide, kSide);
        image::to_chw_normalized(resized, in + good.size() * kPixels);
        good.push_back(i);
      } catch (const std::exception& e) {
        st->errors[i - st->begin] = e.what();
      }
    }
    if (!good.empty()) {
      // An inference failure is never the image's fault (inputs are all 224x224): it stops the
      // job with the shard uncommitted, so a rerun retries it instead of losing those rows.
      auto out = embedder_.embed(input.narrow(0, 0, static_cast<std::int64_t>(good.size()))).contiguous();
      const float* v = out.data_ptr<float>();
      for (std::size_t g = 0; g < good.size(); ++g) {
        const auto r = good[g] - st->begin;
        if (auto why = table::vector_problem(v + g * kDim, kDim); !why.empty())
          st->errors[r] = "the model produced " + why + "; this image gives no usable embedding";
        else std::copy(v + g * kDim, v + (g + 1) * kDim, st->values.begin() + r * kDim);
      }
    }
    if (st->remaining.fetch_sub(batch.end - batch.begin) == batch.end - batch.begin)
      commit(batch.shard, *st);
  }

  // Writes the shard's error part, then its features part (whose existence marks the shard done).
  void commit(int sh, const ShardState& st) {
    table::VectorRows rows;
    rows.dim = kDim;
    table::ErrorRows errs;
    for (std::size_t r = 0; r < st.end - st.begin; ++r) {
      const auto& item = manifest_.items[st.begin + r];
      if (!st.errors[r].empty()) {
        errs.paths.push_back(item.path);
        errs.errors.push_back(st.errors[r]);
      } else {
        rows.paths.push_back(item.path);
        rows.labels.push_back(item.label);
        rows.values.insert(rows.values.end(), st.values.begin() + r * kDim, st.values.begin() + (r + 1) * kDim);
      }
    }
    table::write_errors(errors_.child(table::part_name(sh)), errs);
    table::write_vectors(features_.child(table::part_name(sh)), rows, "features");
    std::lock_guard lock(mu_);
    embedded_ += static_cast<std::int64_t>(rows.size());
    failed_ += static_cast<std::int64_t>(errs.paths.size());
    shards_.erase(sh);
  }

  void report_progress(Clock::time_point t0) {
    std::unique_lock lock(mu_);
    while (!cv_.wait_for(lock, std::chrono::milliseconds(500), [this] { return finished_; })) {
      const double s = std::chrono::duration<double>(Clock::now() - t0).count();
      const std::size_t done = images_done_;
      const double rate = s > 0 ? done / s : 0;
      std::fprintf(stderr, "\rfeaturize: %zu/%zu images  %.1f images/s  %lld errors  ETA %.0fs   ", done,
                   todo_images_, rate, static_cast<long long>(failed_),
                   rate > 0 ? (todo_images_ - done) / rate : 0.0);
    }
    std::fprintf(stderr, "\n");
  }

  const dataset::Manifest& manifest_;
  storage::Location input_;
  storage::Location features_, errors_;
  model::Embedder embedder_;
  Options options_;
  std::vector<Batch> batches_;
  std::size_t todo_images_ = 0;
  std::atomic<std::size_t> next_{0};
  std::atomic<std::size_t> images_done_{0};
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  bool finished_ = false;
  std::map<int, std::shared_ptr<ShardState>> shards_;
  std::int64_t embedded_ = 0, failed_ = 0;
  std::string fatal_;
};

}  // namespace

Summary run(const dataset::Manifest& manifest, const storage::Location& input,
            const storage::Location& output, const std::string& model_pt, const Options& options) {
  if (options.batch < 1) throw Error("--batch must be at least 1");
  Job job(manifest, input, output, model_pt, options);
  return job.run();
}

}  // namespace orchard::featurize
