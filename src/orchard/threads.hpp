#pragma once
// The worker-thread count every stage uses for its --threads option.
#include <algorithm>
#include <thread>

namespace orchard {

// requested when > 0, else one thread per core (at least 1).
inline int resolve_threads(int requested) {
  return requested > 0 ? requested : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

}  // namespace orchard
