#pragma once
// Dynamic batching: photos (224x224, normalized) wait in one bounded queue; a fixed pool of workers
// each takes up to max_batch of them (waiting at most max_delay for a batch to fill), embeds them in
// one call and applies the classifier head. A full queue refuses at once (the caller answers 503).
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "orchard/classify/head.hpp"
#include "orchard/model/model.hpp"

namespace orchard::serve {

// What a worker hands back for one photo: class probabilities, or why inference failed.
struct Outcome {
  std::vector<double> probabilities;  // one per class; empty when error is set
  std::string error;
  double queue_ms = 0, infer_ms = 0;
  int batch = 0;  // photos in the call that embedded it
};

class Batcher {
 public:
  using Done = std::function<void(Outcome)>;
  Batcher(model::Embedder& embedder, const classify::Head& head, int workers, int max_batch,
          std::chrono::microseconds max_delay, int capacity);
  ~Batcher();  // stop() if not yet stopped

  // Queues one photo (3 x 224 x 224 floats); done runs on a worker thread when it is classified.
  // False, without calling done, when the queue is full or the batcher is stopping.
  bool submit(std::vector<float> photo, Done done);

  // Finishes every queued photo, then joins the workers.
  void stop();

  std::size_t depth() const;
  // Receives the size of each batch run (for /metrics).
  std::function<void(int)> on_batch;

 private:
  struct Job {
    std::vector<float> photo;
    Done done;
    std::chrono::steady_clock::time_point queued;
  };
  void work();

  model::Embedder& embedder_;
  const classify::Head& head_;
  const int max_batch_;
  const std::chrono::microseconds max_delay_;
  const std::size_t capacity_;
  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> queue_;
  bool stopping_ = false;
  std::vector<std::thread> workers_;
};

}  // namespace orchard::serve
