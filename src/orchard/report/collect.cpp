#include "orchard/report/collect.hpp"

#include <arrow/api.h>

#include <nlohmann/json.hpp>

#include "orchard/pca/files.hpp"
#include "orchard/storage/layout.hpp"
#include "orchard/table/tables.hpp"

namespace orchard::report {
namespace {
nlohmann::json read_json(const storage::Location& file) {
  if (!storage::exists(file)) return nlohmann::json::object();
  return nlohmann::json::parse(storage::read_file(file)->ToString());
}
}  // namespace

ReportData collect(const storage::Location& output, std::size_t max_points) {
  ReportData d;
  d.title = output.display();
  const auto feat = read_json(layout::featurize_json(output));
  if (feat.contains("images")) d.images_listed = feat["images"].get<std::int64_t>();
  if (feat.contains("seconds")) d.timings_s["featurize"] = feat["seconds"].get<double>();
  if (feat.contains("images_per_s")) d.images_per_s = feat["images_per_s"].get<double>();
  const auto pca = read_json(layout::pca_json(output));
  if (pca.contains("fit_seconds")) d.timings_s["pca fit"] = pca["fit_seconds"].get<double>();
  if (pca.contains("transform_seconds")) d.timings_s["pca transform"] = pca["transform_seconds"].get<double>();

  for (const auto& part : table::list_parts(layout::errors_dir(output))) {
    auto rows = table::read_errors(part);
    d.images_failed += static_cast<std::int64_t>(rows.paths.size());
    for (auto& e : rows.errors) {
      // The reason is the message without the detail after the first ':' (e.g. libjpeg's text).
      const auto colon = e.find(':');
      ++d.error_reasons[colon == std::string::npos ? e : e.substr(0, colon)];
    }
  }
  const auto model_file = layout::pca_model(output);
  if (storage::exists(model_file)) {
    const auto m = pca::read_model(model_file);
    d.k = m.k;
    d.explained_ratio = m.explained_ratio;
  }
  // Labels and the scatter come from pca_features (small rows); without PCA, from features.
  const bool have_pca = !table::list_parts(layout::pca_features_dir(output)).empty();
  const auto parts = table::list_parts(output.child(have_pca ? "pca_features" : "features"));
  std::vector<ScatterPoint> points;  // PC1, PC2, label of every row (a few dozen bytes each)
  for (const auto& part : parts) {
    table::for_each_batch(part, have_pca ? "pca" : "features", 0, 4096, [&](const table::VectorRows& rows) {
      for (std::size_t r = 0; r < rows.size(); ++r) {
        ++d.images_per_class[rows.labels[r]];
        if (have_pca)
          points.push_back({rows.values[r * rows.dim], rows.dim > 1 ? rows.values[r * rows.dim + 1] : 0.0f, rows.labels[r]});
      }
      d.images_embedded += static_cast<std::int64_t>(rows.size());
    });
  }
  const std::size_t step = std::max<std::size_t>(1, (points.size() + max_points - 1) / max_points);
  for (std::size_t i = 0; i < points.size(); i += step) d.scatter.push_back(points[i]);
  return d;
}

storage::Location write(const storage::Location& output) {
  const auto dir = layout::report_dir(output);
  storage::make_dirs(dir);
  const auto file = dir.child("index.html");
  storage::write_text(file, render_html(collect(output)));
  return file;
}

}  // namespace orchard::report
