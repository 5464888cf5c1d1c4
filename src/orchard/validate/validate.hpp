#pragma once
// `orchard validate`: reads every table of OUTPUT back and checks the output contract.
#include <cstdint>
#include <string>
#include <vector>

#include "orchard/storage/storage.hpp"

namespace orchard::validate {

struct Counts {
  std::int64_t inputs = 0, embedded = 0, errors = 0, pca_rows = 0;
  int k = 0;  // 0 when OUTPUT has no PCA yet
};

struct Result {
  Counts counts;
  std::vector<std::string> problems;  // each names the file and the problem; empty = valid
};

// Checks: every manifest input exactly once in features/ or errors/, with its label; 1280 finite,
// not all-zero values per embedding; k consistent across pca/model.parquet, explained_variance.csv
// and pca_features/; _SUCCESS (when present) consistent with the counts.
Result check(const storage::Location& output);

}  // namespace orchard::validate
