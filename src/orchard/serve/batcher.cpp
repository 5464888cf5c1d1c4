#include "orchard/serve/batcher.hpp"

#include <algorithm>
#include <exception>

#include "orchard/model/shape.hpp"

namespace orchard::serve {
namespace {
constexpr std::size_t kPixels = 3 * model::kInputSize * model::kInputSize;
double ms_since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t).count();
}
}  // namespace

Batcher::Batcher(model::Embedder& embedder, const classify::Head& head, int workers, int max_batch,
                 std::chrono::microseconds max_delay, int capacity)
    : embedder_(embedder), head_(head), max_batch_(std::max(1, max_batch)), max_delay_(max_delay),
      capacity_(static_cast<std::size_t>(std::max(1, capacity))) {
  for (int w = 0; w < std::max(1, workers); ++w) workers_.emplace_back([this] { work(); });
}

Batcher::~Batcher() { stop(); }

bool Batcher::submit(std::vector<float> photo, Done done) {
  {
    std::lock_guard lock(mu_);
    if (stopping_ || queue_.size() >= capacity_) return false;
    queue_.push_back({std::move(photo), std::move(done), std::chrono::steady_clock::now()});
  }
  cv_.notify_one();
  return true;
}

void Batcher::stop() {
  {
    std::lock_guard lock(mu_);
    if (stopping_ && workers_.empty()) return;
    stopping_ = true;
  }
  cv_.notify_all();
  for (auto& t : workers_) t.join();
  workers_.clear();
}

std::size_t Batcher::depth() const {
  std::lock_guard lock(mu_);
  return queue_.size();
}

void Batcher::work() {
  std::vector<float> in, out;
  std::vector<Job> batch;
  while (true) {
    batch.clear();
    {
      std::unique_lock lock(mu_);
      cv_.wait(lock, [&] { return stopping_ || !queue_.empty(); });
      if (queue_.empty()) return;  // stopping, and nothing left to answer
      // A batch waits for company until the oldest photo has waited max_delay (never when stopping).
      const auto deadline = queue_.front().queued + max_delay_;
      cv_.wait_until(lock, deadline, [&] {
        return stopping_ || queue_.size() >= static_cast<std::size_t>(max_batch_);
      });
      while (!queue_.empty() && batch.size() < static_cast<std::size_t>(max_batch_)) {
        batch.push_back(std::move(queue_.front()));
        queue_.pop_front();
      }
    }
    if (batch.empty()) continue;  // another worker took them
    if (on_batch) on_batch(static_cast<int>(batch.size()));
    const auto t0 = std::chrono::steady_clock::now();
    const int n = static_cast<int>(batch.size());
    in.resize(n * kPixels);
    out.resize(static_cast<std::size_t>(n) * model::kEmbeddingDim);
    for (int i = 0; i < n; ++i) std::copy(batch[i].photo.begin(), batch[i].photo.end(), in.begin() + i * kPixels);
    std::vector<double> probs;
    std::string error;
    try {
      embedder_.embed(in.data(), n, out.data());
      head_.probabilities_of_embeddings(out.data(), n, probs);
    } catch (const std::exception& e) {
      error = std::string("inference failed: ") + e.what();
    }
    const double infer_ms = ms_since(t0);
    const int c = head_.num_classes();
    for (int i = 0; i < n; ++i) {
      Outcome o;
      o.queue_ms = std::chrono::duration<double, std::milli>(t0 - batch[i].queued).count();
      o.infer_ms = infer_ms;
      o.batch = n;
      if (error.empty())
        o.probabilities.assign(probs.begin() + static_cast<std::ptrdiff_t>(i) * c,
                               probs.begin() + static_cast<std::ptrdiff_t>(i + 1) * c);
      else
        o.error = error;
      batch[i].done(std::move(o));
    }
  }
}

}  // namespace orchard::serve
