#include "orchard/featurize/featurize.hpp"

#include <signal.h>
#include <unistd.h>

#include <cerrno>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <exception>
#include <mutex>
#include <thread>

#include "orchard/error.hpp"
#include "orchard/image/decode.hpp"
#include "orchard/image/resize.hpp"
#include "orchard/model/shape.hpp"
#include "orchard/storage/layout.hpp"
#include "orchard/table/tables.hpp"
#include "orchard/threads.hpp"

namespace orchard::featurize {
namespace {

using Clock = std::chrono::steady_clock;
constexpr int kDim = model::kEmbeddingDim;
constexpr int kSide = model::kInputSize;
constexpr std::int64_t kPixels = 3 * kSide * kSide;

int io_depth(const Options& o, const storage::Location& input) {
  return o.io_depth > 0 ? o.io_depth : (input.object_store() ? 32 : 4);
}

// One shard in flight: readers fetch item bytes ahead (at most `window` not yet taken), workers
// take them in order by batches, decode, embed and fill the shard's rows.
class ShardRun {
 public:
  ShardRun(const dataset::Manifest& m, const storage::Location& input, int shard, model::Embedder& embedder,
           const Options& o, Progress& progress)
      : manifest_(m), input_(input), embedder_(embedder), options_(o), progress_(progress) {
    std::tie(begin_, end_) = m.shard_range(shard);
    const std::size_t n = end_ - begin_;
    bytes_.resize(n);
    ready_.assign(n, 0);
    values_.assign(n * kDim, 0.0f);
    errors_.assign(n, "");
    readers_ = io_depth(o, input);
    window_ = static_cast<std::size_t>(std::max(2 * readers_, 2 * o.batch * resolve_threads(o.threads)));
  }

  // Runs to completion or rethrows the first failure (a read that failed for good, inference).
  void run() {
    std::vector<std::thread> threads;
    for (int r = 0; r < readers_; ++r) threads.emplace_back([this] { guarded([this] { read_loop(); }); });
    for (int w = 0; w < resolve_threads(options_.threads); ++w)
      threads.emplace_back([this] { guarded([this] { work_loop(); }); });
    for (auto& t : threads) t.join();
    if (failure_) std::rethrow_exception(failure_);
  }

  // The rows of the finished shard.
  void rows(table::VectorRows& good, table::ErrorRows& bad) const {
    good.dim = kDim;
    for (std::size_t r = 0; r < end_ - begin_; ++r) {
      const auto& item = manifest_.items[begin_ + r];
      if (!errors_[r].empty()) {
        bad.paths.push_back(item.path);
        bad.errors.push_back(errors_[r]);
      } else {
        good.paths.push_back(item.path);
        good.labels.push_back(item.label);
        good.values.insert(good.values.end(), values_.begin() + r * kDim, values_.begin() + (r + 1) * kDim);
      }
    }
  }

 private:
  template <typename F>
  void guarded(F&& f) {
    try {
      f();
    } catch (...) {
      fail(std::current_exception());
    }
  }

  void fail(std::exception_ptr e) {
    std::lock_guard lock(mu_);
    if (!failure_) failure_ = e;
    stop_ = true;
    cv_.notify_all();
  }

  // Reads item bytes in order, staying at most window_ items ahead of the workers.
  void read_loop() {
    while (true) {
      const std::size_t i = next_read_.fetch_add(1);
      if (i >= bytes_.size()) return;
      {
        std::unique_lock lock(mu_);
        cv_.wait(lock, [&] { return stop_ || i < taken_ + window_; });
        if (stop_) return;
      }
      const auto& item = manifest_.items[begin_ + i];
      // A store failure here (after retries) throws: it fails the shard, never an error row. An
      // input deleted or resized since planning is that input's problem: an error row.
      std::shared_ptr<arrow::Buffer> buf;
      std::string why;
      try {
        buf = storage::read_file(input_.at(item.path), item.size);
      } catch (const Error& e) {
        if (e.is_bad_input()) {
          why = e.what();
        } else if (auto gone = e.is_not_found() ? storage::changed_since_listing(input_.at(item.path), -1)
                                                 : std::nullopt) {
          why = gone->reason;
        } else {
          throw;  // a store failure, or a file that is there after all: fail the shard
        }
      }
      std::lock_guard lock(mu_);
      bytes_[i] = std::move(buf);
      if (!why.empty()) errors_[i] = std::move(why);
      ready_[i] = 1;
      cv_.notify_all();
    }
  }

  // Waits until item i is read; false when the shard is stopping. Then bytes_[i] holds its bytes,
  // or errors_[i] says why it has none.
  bool take(std::size_t i, std::shared_ptr<arrow::Buffer>& bytes) {
    std::unique_lock lock(mu_);
    cv_.wait(lock, [&] { return stop_ || ready_[i]; });
    if (stop_) return false;
    ++taken_;
    cv_.notify_all();
    bytes = std::move(bytes_[i]);
    return true;
  }

  // The error row of item i, whose bytes did not decode: the decoder's reason, unless the file no
  // longer has its listed size (it was read to that size, so "truncated" would blame the bytes).
  std::string bad_input_row(std::size_t i, const Error& e) const {
    const auto& item = manifest_.items[begin_ + i];
    if (item.size >= 0)
      if (auto c = storage::changed_since_listing(input_.at(item.path), item.size)) return c->reason;
    return e.what();
  }

  void work_loop() {
    std::vector<float> input(static_cast<std::size_t>(options_.batch) * kPixels), output(options_.batch * kDim);
    float* in = input.data();
    std::vector<std::size_t> good;
    const std::size_t n = bytes_.size();
    while (true) {
      const std::size_t first = next_batch_.fetch_add(1) * options_.batch;
      if (first >= n) return;
      const std::size_t last = std::min(n, first + static_cast<std::size_t>(options_.batch));
      good.clear();
      for (std::size_t i = first; i < last; ++i) {
        std::shared_ptr<arrow::Buffer> bytes;
        if (!take(i, bytes)) return;
        if (!bytes) {  // the read found the input gone or resized: errors_[i] says so
          ++progress_.errors;
          continue;
        }
        try {  // only a bad-input error is this image's fault; anything else fails the shard
          auto rgb = image::decode_to_rgb({bytes->data(), static_cast<std::size_t>(bytes->size())});
          image::to_chw_normalized(image::resize_bicubic(rgb, kSide, kSide), in + good.size() * kPixels);
          good.push_back(i);
        } catch (const Error& e) {
          if (!e.is_bad_input()) throw;
          errors_[i] = bad_input_row(i, e);
          ++progress_.errors;
        }
      }
      if (!good.empty()) {
        // An inference failure is never the image's fault (inputs are all 224x224): it throws and
        // leaves the shard unpublished, so a rerun retries it instead of losing those rows.
        embedder_.embed(in, static_cast<int>(good.size()), output.data());
        const float* v = output.data();
        for (std::size_t g = 0; g < good.size(); ++g) {
          if (auto why = table::vector_problem(v + g * kDim, kDim); !why.empty()) {
            errors_[good[g]] = "the model produced " + why + "; this image gives no usable embedding";
            ++progress_.errors;
          } else {
            std::copy(v + g * kDim, v + (g + 1) * kDim, values_.begin() + good[g] * kDim);
          }
        }
      }
      progress_.images += static_cast<std::int64_t>(last - first);
    }
  }

  const dataset::Manifest& manifest_;
  const storage::Location& input_;
  model::Embedder& embedder_;
  const Options& options_;
  Progress& progress_;
  std::size_t begin_ = 0, end_ = 0;
  int readers_ = 1;
  std::size_t window_ = 1;
  std::vector<std::shared_ptr<arrow::Buffer>> bytes_;
  std::vector<char> ready_;
  std::vector<float> values_;        // (end-begin) x kDim
  std::vector<std::string> errors_;  // empty = embedded
  std::atomic<std::size_t> next_read_{0}, next_batch_{0};
  std::size_t taken_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::exception_ptr failure_;
};

// Deletes the half-written local parts of `shards` (sorted) that a killed run left (they never had
// their final name; an object store never has any): those written on this host by a process that
// no longer runs and untouched for a minute (a live writer in another PID namespace with the same
// host name keeps writing), and any untouched for a day (another machine's, or named by an earlier
// version). Another process (a concurrent or speculative Spark attempt, here or on another machine
// sharing the folder) may be writing its own right now.
void remove_stale_temporaries(const storage::Location& dir, const std::vector<int>& shards) {
  if (dir.object_store()) return;
  const auto now = std::chrono::system_clock::now();
  for (const auto& f : storage::list_dir(dir)) {
    const auto shard = f.IsFile() ? layout::temporary_part_shard(f.base_name()) : std::nullopt;
    if (!shard || !std::binary_search(shards.begin(), shards.end(), *shard)) continue;
    const auto idle = now - f.mtime();
    const auto w = layout::parse_temporary(f.base_name());
    // This process writes nothing yet: a temporary with its pid is an earlier process's (pid reused).
    const bool writer_gone = w && w->host == storage::host_name() &&
                             (w->pid == ::getpid() || (::kill(static_cast<pid_t>(w->pid), 0) != 0 && errno == ESRCH));
    if ((writer_gone && idle > std::chrono::minutes(1)) || idle > std::chrono::hours(24))
      storage::remove(dir.at(f.path()));
  }
}

// A rate line on stderr every half second while `done` is false (only on a terminal).
class ProgressLine {
 public:
  ProgressLine(const Progress& p, std::int64_t total, bool show) : p_(p), total_(total) {
    if (show) thread_ = std::thread([this] { loop(); });
  }
  ~ProgressLine() {
    {
      std::lock_guard lock(mu_);
      done_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
  }

 private:
  void loop() {
    const auto t0 = Clock::now();
    std::unique_lock lock(mu_);
    while (!cv_.wait_for(lock, std::chrono::milliseconds(500), [this] { return done_; })) {
      const double s = std::chrono::duration<double>(Clock::now() - t0).count();
      const auto n = p_.images.load();
      const double rate = s > 0 ? n / s : 0;
      std::fprintf(stderr, "\rfeaturize: %lld/%lld images  %.1f images/s  %lld errors  ETA %.0fs   ",
                   static_cast<long long>(n), static_cast<long long>(total_), rate,
                   static_cast<long long>(p_.errors.load()), rate > 0 ? (total_ - n) / rate : 0.0);
    }
    std::fprintf(stderr, "\n");
  }
  const Progress& p_;
  std::int64_t total_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool done_ = false;
  std::thread thread_;
};

}  // namespace

Featurizer::Featurizer(const std::string& model_file, const Options& options)
    : embedder_(model::load_embedder(model_file, {resolve_threads(options.threads), 1, options.batch})),
      options_(options) {
  if (options_.batch < 1) throw Error("batch must be at least 1");
}

void Featurizer::run_shard(const dataset::Manifest& manifest, const storage::Location& input,
                           const storage::Location& output, int shard, Progress& progress) {
  ShardRun run(manifest, input, shard, *embedder_, options_, progress);
  run.run();
  table::VectorRows good;
  table::ErrorRows bad;
  run.rows(good, bad);
  // Errors first: the features (or predictions) part is the mark that the shard is done.
  table::write_errors(layout::error_part(output, shard), bad);
  if (!options_.head) {
    table::write_vectors(layout::feature_part(output, shard), good, "features");
    return;
  }
  const auto& head = *options_.head;
  std::vector<double> probs;
  head.probabilities_of_embeddings(good.values.data(), static_cast<std::int64_t>(good.size()), probs);
  table::PredictionRows predicted;
  predicted.paths = std::move(good.paths);
  predicted.labels = std::move(good.labels);
  for (std::size_t r = 0; r < predicted.size(); ++r) {
    const auto top = classify::top_k(probs.data() + r * head.num_classes(), head.num_classes(), options_.top);
    predicted.top_labels.emplace_back();
    for (int c : top.classes) predicted.top_labels.back().push_back(head.classes[c]);
    predicted.top_probabilities.push_back(top.probabilities);
  }
  table::write_predictions(layout::prediction_part(output, shard), predicted);
}

storage::Location done_dir(const storage::Location& output, const Options& options) {
  return options.head ? layout::predictions_dir(output) : layout::features_dir(output);
}

Summary run(const dataset::Manifest& manifest, const storage::Location& input, const storage::Location& output,
            const std::string& model_file, const Options& options, const std::vector<int>& shards) {
  std::vector<int> asked = shards;
  if (asked.empty())
    for (int s = 0; s < manifest.num_shards(); ++s) asked.push_back(s);
  std::vector<int> sorted_asked = asked;
  std::sort(sorted_asked.begin(), sorted_asked.end());
  for (const auto& dir : {done_dir(output, options), layout::errors_dir(output)}) {
    storage::make_dirs(dir);
    remove_stale_temporaries(dir, sorted_asked);
  }
  Summary sum;
  sum.shards = static_cast<int>(asked.size());
  std::vector<int> todo;
  std::int64_t todo_images = 0;
  // One listing of features/ instead of a HEAD per shard; a listing that fails throws (never
  // taken for "nothing finished").
  const auto finished = table::part_shards(done_dir(output, options));
  for (int s : asked) {
    const auto [b, e] = manifest.shard_range(s);
    sum.images += static_cast<std::int64_t>(e - b);
    if (std::binary_search(finished.begin(), finished.end(), s)) {
      ++sum.shards_skipped;
      continue;
    }
    todo.push_back(s);
    todo_images += static_cast<std::int64_t>(e - b);
  }
  auto t0 = Clock::now();
  if (!todo.empty()) {
    Featurizer featurizer(model_file, options);  // a model that cannot load changes nothing
    if (options.before_writing) options.before_writing();
    sum.model_seconds = std::chrono::duration<double>(Clock::now() - t0).count();
    t0 = Clock::now();  // images/s counts the images, not the model's loading
    Progress progress;
    ProgressLine line(progress, todo_images, options.progress && isatty(STDERR_FILENO));
    for (int s : todo) featurizer.run_shard(manifest, input, output, s, progress);
    sum.failed = progress.errors;
    sum.embedded = progress.images - progress.errors;
  }
  sum.seconds = std::chrono::duration<double>(Clock::now() - t0).count();
  sum.images_per_s = sum.seconds > 0 ? (sum.embedded + sum.failed) / sum.seconds : 0;
  return sum;
}

}  // namespace orchard::featurize
