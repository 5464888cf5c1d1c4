#include "orchard/report/collect.hpp"

#include <arrow/api.h>

#include <cmath>
#include <limits>
#include <stdexcept>

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

// A value in metrics.json that the page cannot show.
struct Malformed : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// A number that must be finite and in [0, hi]; hi is 1 (a fraction) or infinity.
double checked(const nlohmann::json& v, const char* what, double hi) {
  const double x = v.is_number() ? v.get<double>() : std::numeric_limits<double>::quiet_NaN();
  if (!std::isfinite(x) || x < 0 || x > hi)
    throw Malformed(std::string(what) + " is " + v.dump() +
                    (std::isfinite(hi) ? ", not a number in [0, 1]" : ", not a finite number >= 0"));
  return x;
}

// A count that must be a non-negative integer.
std::int64_t count_of(const nlohmann::json& v, const char* what) {
  if (!v.is_number_integer() || v.get<std::int64_t>() < 0)
    throw Malformed(std::string(what) + " is " + v.dump() + ", not a count");
  return v.get<std::int64_t>();
}

// metrics.json as `orchard train` writes it; throws on a missing field or an out-of-range value.
ClassifierSummary parse_classifier(const nlohmann::json& m) {
  constexpr double inf = std::numeric_limits<double>::infinity();
  ClassifierSummary c;
  const auto& h = m.at("holdout");
  c.top1 = checked(h.at("top1"), "holdout.top1", 1);
  c.top5 = checked(h.at("top5"), "holdout.top5", 1);
  c.holdout_method = h.at("method").get<std::string>();
  const auto& sz = m.at("sizes");
  c.rows = count_of(sz.at("rows"), "sizes.rows");
  c.holdout_rows = h.contains("rows") ? count_of(h["rows"], "holdout.rows") : 0;
  c.classes = count_of(sz.at("classes"), "sizes.classes");
  c.inputs = count_of(sz.at("inputs"), "sizes.inputs");
  if (sz.contains("on")) c.inputs_on = sz["on"].get<std::string>();
  c.l2 = checked(m.at("l2"), "l2", inf);
  for (const auto& t : m.at("l2_tried"))
    c.l2_tried.push_back({checked(t.at("l2"), "l2_tried.l2", inf), checked(t.at("top1"), "l2_tried.top1", 1),
                          checked(t.at("top5"), "l2_tried.top5", 1)});
  for (const auto& k : m.at("per_class"))
    c.per_class.push_back({k.at("class").get<std::string>(), checked(k.at("precision"), "per_class.precision", 1),
                           checked(k.at("recall"), "per_class.recall", 1), checked(k.at("f1"), "per_class.f1", 1),
                           count_of(k.at("support"), "per_class.support")});
  for (const auto& p : m.at("confused_pairs"))
    c.confused.push_back({p.at("label").get<std::string>(), p.at("predicted").get<std::string>(),
                          count_of(p.at("count"), "confused_pairs.count")});
  for (const auto& w : m.at("misclassified"))
    c.misclassified.push_back({w.at("path").get<std::string>(), w.at("label").get<std::string>(),
                               w.at("predicted").get<std::string>(),
                               checked(w.at("probability"), "misclassified.probability", 1)});
  return c;
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
  // The classifier section: a malformed metrics.json skips it with a note, never the page.
  const auto metrics = layout::classifier_metrics(output);
  if (storage::exists(metrics)) {
    const auto text = storage::read_file(metrics)->ToString();  // a store failure fails the report as elsewhere
    std::string why;
    try {
      d.classifier = parse_classifier(nlohmann::json::parse(text));
    } catch (const nlohmann::json::exception& e) {  // not JSON, a missing field, a wrong type
      why = e.what();
    } catch (const Malformed& e) {
      why = e.what();
    }
    if (!why.empty()) {
      for (char& ch : why)
        if (ch == '\n' || ch == '\r') ch = ' ';
      if (why.size() > 300) {  // one line: cut at a UTF-8 character boundary
        std::size_t cut = 300;
        while (cut > 0 && (static_cast<unsigned char>(why[cut]) & 0xC0) == 0x80) --cut;
        why = why.substr(0, cut) + "...";
      }
      d.classifier_note = "Classifier section skipped: classifier/metrics.json is malformed (" + why + ").";
    }
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
