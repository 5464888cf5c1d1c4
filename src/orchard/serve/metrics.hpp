#pragma once
// The service's Prometheus metrics: requests by status code, request latency and batch size
// histograms, and the queue depth, rendered in the text exposition format for GET /metrics.
#include <array>
#include <atomic>
#include <cstdint>
#include <map>
#include <mutex>
#include <string>
#include <vector>

namespace orchard::serve {

// A fixed-bucket histogram (cumulative on output, as Prometheus expects).
class Histogram {
 public:
  explicit Histogram(std::vector<double> bounds) : bounds_(std::move(bounds)), counts_(bounds_.size() + 1, 0) {}
  void observe(double v);
  // The _bucket, _sum and _count lines of metric `name`.
  std::string render(const std::string& name, const std::string& help) const;

 private:
  std::vector<double> bounds_;
  mutable std::mutex mu_;
  std::vector<std::uint64_t> counts_;
  double sum_ = 0;
  std::uint64_t count_ = 0;
};

class Metrics {
 public:
  Metrics();
  void request(int status, double seconds);  // one answered request
  void batch(int size) { batch_size_.observe(size); }
  // The whole exposition, with the queue depth and in-flight requests sampled now.
  std::string render(std::size_t queue_depth, std::int64_t in_flight) const;

 private:
  mutable std::mutex mu_;
  std::map<int, std::uint64_t> by_status_;
  Histogram latency_, batch_size_;
};

}  // namespace orchard::serve
