#pragma once
// Orchard's one error style: throw orchard::Error with a message that names the input and says
// what to do. Per-input failures are caught by the pipeline and become error rows; anything that
// stops the job is caught by the CLI and printed as one line with a non-zero exit.
#include <stdexcept>
#include <string>

namespace orchard {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

}  // namespace orchard
