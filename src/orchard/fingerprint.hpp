#pragma once
// FNV-1a (64-bit) over bytes: the fingerprints that tie outputs to what made them (the model's
// weights, a PCA, a classifier head). Not cryptographic: it tells versions apart, nothing more.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <string>

namespace orchard {

class Fingerprint {
 public:
  // Mixes n bytes at p into the fingerprint.
  void mix(const void* p, std::size_t n) {
    const auto* b = static_cast<const unsigned char*>(p);
    for (std::size_t i = 0; i < n; ++i) h_ = (h_ ^ b[i]) * 1099511628211ull;
  }
  std::uint64_t value() const { return h_; }
  // The value as 16 lowercase hex digits.
  std::string hex() const {
    char s[17];
    std::snprintf(s, sizeof s, "%016llx", static_cast<unsigned long long>(h_));
    return s;
  }

 private:
  std::uint64_t h_ = 1469598103934665603ull;
};

}  // namespace orchard
