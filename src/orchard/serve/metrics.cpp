#include "orchard/serve/metrics.hpp"

#include <algorithm>
#include <charconv>

namespace orchard::serve {
namespace {
std::string number(double v) {  // the shortest text that reads back as v
  char buf[64];
  const auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}
}  // namespace

void Histogram::observe(double v) {
  const auto i = static_cast<std::size_t>(std::lower_bound(bounds_.begin(), bounds_.end(), v) - bounds_.begin());
  std::lock_guard lock(mu_);
  ++counts_[i];
  sum_ += v;
  ++count_;
}

std::string Histogram::render(const std::string& name, const std::string& help) const {
  std::lock_guard lock(mu_);
  std::string s = "# HELP " + name + " " + help + "\n# TYPE " + name + " histogram\n";
  std::uint64_t cumulative = 0;
  for (std::size_t i = 0; i < bounds_.size(); ++i) {
    cumulative += counts_[i];
    s += name + "_bucket{le=\"" + number(bounds_[i]) + "\"} " + std::to_string(cumulative) + "\n";
  }
  s += name + "_bucket{le=\"+Inf\"} " + std::to_string(count_) + "\n";
  s += name + "_sum " + number(sum_) + "\n" + name + "_count " + std::to_string(count_) + "\n";
  return s;
}

Metrics::Metrics()
    : latency_({0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10}),
      batch_size_({1, 2, 4, 8, 16, 32, 64, 128, 256}) {}

void Metrics::request(int status, double seconds) {
  {
    std::lock_guard lock(mu_);
    ++by_status_[status];
  }
  latency_.observe(seconds);
}

std::string Metrics::render(std::size_t queue_depth, std::int64_t in_flight) const {
  std::string s = "# HELP orchard_requests_total HTTP requests answered, by status code.\n"
                  "# TYPE orchard_requests_total counter\n";
  {
    std::lock_guard lock(mu_);
    for (const auto& [code, n] : by_status_)
      s += "orchard_requests_total{code=\"" + std::to_string(code) + "\"} " + std::to_string(n) + "\n";
  }
  s += latency_.render("orchard_request_seconds", "Time from a whole request read to its answer written.");
  s += batch_size_.render("orchard_batch_size", "Photos per inference call.");
  s += "# HELP orchard_queue_depth Photos waiting for an inference worker.\n# TYPE orchard_queue_depth gauge\n"
       "orchard_queue_depth " + std::to_string(queue_depth) + "\n";
  s += "# HELP orchard_requests_in_flight Requests read and not yet answered.\n"
       "# TYPE orchard_requests_in_flight gauge\norchard_requests_in_flight " + std::to_string(in_flight) + "\n";
  return s;
}

}  // namespace orchard::serve
