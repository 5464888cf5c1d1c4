#pragma once
// Orchard's one error style: throw orchard::Error with a message that names the input and says
// what to do. Like LevelDB's Status, an error carries its kind, so a caller can tell a bad image
// (an error row) from a failed read (retry, then fail the shard) from a job that cannot run.
// Per-image failures become error rows; anything else is caught by the CLI and printed as one
// line with a non-zero exit.
#include <stdexcept>
#include <string>

namespace orchard {

class Error : public std::runtime_error {
 public:
  enum class Kind {
    kJob,        // the job cannot run as asked (usage, missing model, malformed OUTPUT, ...)
    kBadInput,   // the bytes of one input cannot be used (corrupt, truncated, not an image)
    kNotFound,   // a file or object that should be there is not
    kStorage,    // the store failed: timeout, 5xx, SlowDown, reset, access denied (retryable)
  };

  explicit Error(const std::string& what, Kind kind = Kind::kJob) : std::runtime_error(what), kind_(kind) {}

  static Error bad_input(const std::string& what) { return Error(what, Kind::kBadInput); }
  static Error not_found(const std::string& what) { return Error(what, Kind::kNotFound); }
  static Error storage(const std::string& what) { return Error(what, Kind::kStorage); }
  // A store failure whose retries are spent: an outer retry loop passes it on instead of retrying.
  static Error storage_given_up(const std::string& what) {
    Error e(what, Kind::kStorage);
    e.given_up_ = true;
    return e;
  }

  Kind kind() const { return kind_; }
  bool is_bad_input() const { return kind_ == Kind::kBadInput; }
  bool is_not_found() const { return kind_ == Kind::kNotFound; }
  bool is_storage() const { return kind_ == Kind::kStorage; }
  bool retries_spent() const { return given_up_; }

 private:
  Kind kind_;
  bool given_up_ = false;
};

}  // namespace orchard
