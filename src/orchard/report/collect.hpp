#pragma once
// Gathers what the report shows from the files of OUTPUT.
#include "orchard/report/report.hpp"
#include "orchard/storage/storage.hpp"

namespace orchard::report {

// Reads _featurize.json, _pca.json, errors/, pca/model.parquet and pca_features/ (labels and the
// first two components of at most max_points rows, evenly sampled) and classifier/metrics.json
// (a malformed one leaves classifier empty and says why in classifier_note). Missing stages stay empty.
ReportData collect(const storage::Location& output, std::size_t max_points = 4000);

// Writes OUTPUT/report/index.html and returns its location.
storage::Location write(const storage::Location& output);

}  // namespace orchard::report
