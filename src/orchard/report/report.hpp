#pragma once
// The offline HTML report: one page, charts as inline SVG, no network.
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace orchard::report {

struct ScatterPoint {
  float pc1 = 0, pc2 = 0;
  std::string label;
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
};

// Renders the page as a self-contained HTML string.
std::string render_html(const ReportData& data);

}  // namespace orchard::report
