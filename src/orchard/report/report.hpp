#pragma once
// The offline HTML report: one page, charts as inline SVG, no network.
#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <vector>

namespace orchard::report {

struct ScatterPoint {
  float pc1 = 0, pc2 = 0;
  std::string label;
};

// The holdout figures of `orchard train` (OUTPUT/classifier/metrics.json) that the page shows.
struct ClassifierSummary {
  // One L2 strength tried on the holdout.
  struct L2Try {
    double l2 = 0, top1 = 0, top5 = 0;  // accuracies as fractions (0..1)
  };
  // One class's holdout scores; support 0 = no holdout image of that class.
  struct ClassScore {
    std::string name;
    double precision = 0, recall = 0, f1 = 0;
    std::int64_t support = 0;
  };
  // A (true label -> predicted) pair and how many holdout images it took.
  struct Confusion {
    std::string label, predicted;
    std::int64_t count = 0;
  };
  // One misclassified holdout image, with the probability of the predicted class.
  struct Miss {
    std::string path, label, predicted;
    double probability = 0;
  };
  double top1 = 0, top5 = 0;         // holdout accuracies as fractions (0..1)
  std::string holdout_method;        // how the holdout was chosen, in words
  std::int64_t rows = 0, holdout_rows = 0, classes = 0, inputs = 0;
  std::string inputs_on;             // what the inputs are ("pca", "features"); may be empty
  double l2 = 0;                     // the chosen L2 strength
  std::vector<L2Try> l2_tried;       // in the order tried
  std::vector<ClassScore> per_class; // every class; the page ranks the worst by F1
  std::vector<Confusion> confused;   // most frequent first (the page re-sorts and shows 10)
  std::vector<Miss> misclassified;   // the page shows the first 8
};

// Everything the page shows; the CLI fills it from OUTPUT.
struct ReportData {
  std::string title;                          // e.g. the OUTPUT path
  std::int64_t images_listed = 0, images_embedded = 0, images_failed = 0;
  std::map<std::string, std::int64_t> error_reasons;   // reason -> count
  std::map<std::string, double> timings_s;             // stage -> seconds
  double images_per_s = 0;
  std::vector<double> explained_ratio;                 // per component, descending
  int k = 0;                                           // chosen number of components
  std::vector<ScatterPoint> scatter;                   // already sampled
  std::map<std::string, std::int64_t> images_per_class;
  std::optional<ClassifierSummary> classifier;         // absent: no (readable) classifier/metrics.json
  std::string classifier_note;                         // why metrics.json was skipped; empty if not
};

// Renders the page as a self-contained HTML string.
std::string render_html(const ReportData& data);

}  // namespace orchard::report
