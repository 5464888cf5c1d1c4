// The HTML report: structure, escaping, self-containment, palette. The rendering itself is
// checked by tests/e2e/test_report_screenshot.py in headless Chromium.
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <regex>
#include <set>
#include <string>

#include "orchard/report/collect.hpp"
#include "orchard/report/report.hpp"
#include "orchard/storage/layout.hpp"
#include "orchard/storage/storage.hpp"

namespace rp = orchard::report;

namespace {

std::size_t count(const std::string& s, const std::string& what) {
  std::size_t n = 0;
  for (auto p = s.find(what); p != std::string::npos; p = s.find(what, p + what.size())) ++n;
  return n;
}

rp::ReportData sample(int classes) {
  rp::ReportData d;
  d.title = "/data/out <run>";
  d.images_listed = 1003, d.images_embedded = 1000, d.images_failed = 3;
  d.error_reasons = {{"truncated JPEG <EOF>", 2}, {"not an image", 1}};
  d.timings_s = {{"featurize", 12.5}, {"pca", 0.75}};
  d.images_per_s = 80;
  for (int i = 0; i < 1280; ++i) d.explained_ratio.push_back(1.0 / ((i + 1) * 7.7));
  d.k = 7;
  for (int c = 0; c < classes; ++c) {
    const std::string label = c == 0 ? "<b>&\"" : "class " + std::to_string(c);
    d.images_per_class[label] = 10 + c;
    for (int j = 0; j < 3; ++j) d.scatter.push_back({static_cast<float>(c + j), static_cast<float>(c - j), label});
  }
  return d;
}

// A classifier summary with 12 scored classes (F1 rising with the index), one without holdout
// images, 12 confused pairs and 10 misclassified examples; the first path needs escaping.
rp::ClassifierSummary classifier_sample() {
  rp::ClassifierSummary c;
  c.top1 = 0.9835341365461847, c.top5 = 0.9987951807228915;
  c.holdout_method = "block holdout: 0.1 of the blocks <20 frames>";
  c.rows = 23619, c.holdout_rows = 2490, c.classes = 13, c.inputs = 200, c.inputs_on = "pca";
  c.l2 = 1e-4;
  c.l2_tried = {{0.01, 0.9706827, 0.9987952}, {1e-4, 0.9835341, 0.9987952}, {3e-5, 0.9827309, 0.9987952}};
  for (int i = 0; i < 12; ++i) {
    const double f1 = 0.5 + 0.04 * i;
    c.per_class.push_back({i == 0 ? "Cherry <Rainier> & 1" : "Class " + std::to_string(i), f1, f1, f1, 10 + i});
  }
  c.per_class.push_back({"Apple Red 2", 0, 0, 0, 0});  // predicted but never in the holdout
  for (int i = 0; i < 12; ++i)
    c.confused.push_back({"True " + std::to_string(i), "Pred " + std::to_string(i), i == 5 ? 99 : 20 - i});
  for (int i = 0; i < 10; ++i)
    c.misclassified.push_back({i == 0 ? "/data/a<b>&c/r_52_100.jpg" : "/data/x/" + std::to_string(i) + ".jpg",
                               "Apricot 1", "Apple Red 2", 0.25 + 0.05 * i});
  return c;
}

// The HTML from the "Classifier" heading to the end of the page.
std::string classifier_section(const std::string& html) {
  const auto at = html.find("<h2>Classifier</h2>");
  return at == std::string::npos ? std::string() : html.substr(at);
}

// A fresh folder under the system's temp dir, removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    path_ = std::filesystem::temp_directory_path() /
            ("orchard-report-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++));
    std::filesystem::create_directories(path_ / "classifier");
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  const std::filesystem::path& path() const { return path_; }
  void write_metrics(const std::string& text) const { std::ofstream(path_ / "classifier" / "metrics.json") << text; }

 private:
  static inline int counter_ = 0;
  std::filesystem::path path_;
};

}  // namespace

TEST(Report, HasTheThreeChartsAndTheSummary) {
  const auto html = rp::render_html(sample(5));
  EXPECT_EQ(html.rfind("<!DOCTYPE html>", 0), 0u);
  EXPECT_EQ(count(html, "<svg"), 3u);
  EXPECT_EQ(count(html, "</svg>"), 3u);
  EXPECT_NE(html.find("aria-label=\"scree plot\""), std::string::npos);
  EXPECT_NE(html.find("aria-label=\"PC1/PC2 scatter\""), std::string::npos);
  EXPECT_NE(html.find("aria-label=\"images per class\""), std::string::npos);
  EXPECT_NE(html.find("<td>1003</td>"), std::string::npos);
  EXPECT_NE(html.find("80.0 images/s"), std::string::npos);
  EXPECT_NE(html.find("12.50 s"), std::string::npos);
  // Scree: 50 bars (k = 7 < 50), the cumulative curve, and k marked with its cumulative share.
  EXPECT_EQ(count(html, "<title>PC"), 50u);
  EXPECT_NE(html.find("class=\"cumulative\""), std::string::npos);
  EXPECT_NE(html.find("class=\"kline\""), std::string::npos);
  double cum = 0;
  for (int i = 0; i < 7; ++i) cum += 1.0 / ((i + 1) * 7.7);
  char expect[64];
  std::snprintf(expect, sizeof expect, "k = 7 (%.1f %%)", 100 * cum);
  EXPECT_NE(html.find(expect), std::string::npos) << expect;
  // Scatter: one circle per point, per-class bars one per class.
  EXPECT_EQ(count(html, "<circle"), 15u);
  EXPECT_EQ(count(html, "</title></rect><text"), 5u);
}

TEST(Report, EscapesEveryLabelAndReason) {
  const auto html = rp::render_html(sample(3));
  EXPECT_EQ(html.find("<b>&\""), std::string::npos) << "raw label leaked into the page";
  EXPECT_EQ(html.find("<b>"), std::string::npos);
  EXPECT_GE(count(html, "&lt;b&gt;&amp;&quot;"), 3u);  // scatter title, legend, class chart
  EXPECT_NE(html.find("truncated JPEG &lt;EOF&gt;"), std::string::npos);
  EXPECT_NE(html.find("/data/out &lt;run&gt;"), std::string::npos);
  EXPECT_EQ(html.find("<run>"), std::string::npos);
}

TEST(Report, SelfContained) {
  const auto html = rp::render_html(sample(4));
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(html.find("<link"), std::string::npos);
  EXPECT_EQ(html.find("src="), std::string::npos);
  EXPECT_EQ(html.find("href="), std::string::npos);
  EXPECT_EQ(html.find("url("), std::string::npos);
  EXPECT_EQ(html.find("@import"), std::string::npos);
  // The only URL is the SVG namespace, once per chart.
  EXPECT_EQ(count(html, "http"), count(html, "xmlns=\"http://www.w3.org/2000/svg\""));
}

TEST(Report, PaletteIsDistinctAndSharedForManyClasses) {
  const auto html = rp::render_html(sample(141));
  // Group fill colours of the scatter, one per class, all distinct.
  std::regex group(R"re(<g class="pts" fill="(#[0-9a-f]{6})"><title>([^<]*)</title>)re");
  std::set<std::string> colours;
  int groups = 0;
  for (auto it = std::sregex_iterator(html.begin(), html.end(), group); it != std::sregex_iterator(); ++it) {
    ++groups;
    colours.insert((*it)[1]);
    // The same colour is used for that class's bar.
    EXPECT_NE(html.find("fill=\"" + (*it)[1].str() + "\"><title>" + (*it)[2].str() + ": "), std::string::npos)
        << (*it)[2];
  }
  EXPECT_EQ(groups, 141);
  EXPECT_EQ(colours.size(), 141u);
  // Deterministic: the same data renders the same page.
  EXPECT_EQ(html, rp::render_html(sample(141)));
}

TEST(Report, EmptyDataStillRenders) {
  rp::ReportData d;
  d.title = "empty";
  const auto html = rp::render_html(d);
  EXPECT_NE(html.find("No PCA fit yet"), std::string::npos);
  EXPECT_NE(html.find("No projected points"), std::string::npos);
  EXPECT_EQ(html.find("nan"), std::string::npos);
  EXPECT_NE(html.find("</html>"), std::string::npos);
}

TEST(Report, ScreeExtendsToShowALargeK) {
  auto d = sample(2);
  d.k = 120;
  const auto html = rp::render_html(d);
  EXPECT_EQ(count(html, "<title>PC"), 125u);
  EXPECT_NE(html.find("k = 120 ("), std::string::npos);
  EXPECT_NE(html.find("First 125 of 1280 components shown"), std::string::npos);
}

TEST(ReportClassifier, ShowsAccuracyL2WorstClassesPairsAndExamples) {
  auto d = sample(3);
  d.classifier = classifier_sample();
  const auto html = rp::render_html(d);
  const auto sec = classifier_section(html);
  ASSERT_FALSE(sec.empty()) << "no Classifier section";
  EXPECT_NE(sec.find("<tr><th>Holdout top-1 accuracy</th><td>98.35 %</td></tr>"), std::string::npos);
  EXPECT_NE(sec.find("<tr><th>Holdout top-5 accuracy</th><td>99.88 %</td></tr>"), std::string::npos);
  EXPECT_NE(sec.find("block holdout: 0.1 of the blocks &lt;20 frames&gt;"), std::string::npos);
  EXPECT_NE(sec.find("<td>23619 (2490)</td>"), std::string::npos);
  EXPECT_NE(sec.find("<td>200 (pca)</td>"), std::string::npos);
  // L2: the shortest text of each value tried, the chosen one marked.
  EXPECT_NE(sec.find("<th>Chosen L2</th><td>0.0001</td>"), std::string::npos);
  EXPECT_NE(sec.find("<tr class=\"chosen\"><td>0.0001 (chosen)</td><td>98.35 %</td><td>99.88 %</td></tr>"),
            std::string::npos);
  EXPECT_NE(sec.find("<tr><td>3e-05</td><td>98.27 %</td>"), std::string::npos);
  EXPECT_NE(sec.find("<tr><td>0.01</td><td>97.07 %</td>"), std::string::npos);
  EXPECT_EQ(count(sec, "(chosen)"), 1u);
  // Worst classes: the 10 lowest F1 of the classes with holdout images, lowest first; the class
  // without holdout images (F1 0 by convention) is counted, not ranked.
  const auto worst = sec.find("<h3>Worst classes by F1</h3>");
  ASSERT_NE(worst, std::string::npos);
  EXPECT_NE(sec.find("<tr><td>Cherry &lt;Rainier&gt; &amp; 1</td><td>0.500</td><td>0.500</td><td>0.500</td>"
                     "<td>10</td></tr>",
                     worst),
            std::string::npos);
  EXPECT_LT(sec.find("Cherry &lt;Rainier&gt;"), sec.find("<td>Class 1</td>"));
  EXPECT_NE(sec.find("<td>Class 9</td>"), std::string::npos);
  EXPECT_EQ(sec.find("<td>Class 10</td>"), std::string::npos);
  EXPECT_EQ(sec.find("<td>Apple Red 2</td><td>0.000"), std::string::npos);
  EXPECT_NE(sec.find("1 of 13 classes have no holdout images"), std::string::npos);
  // Confused pairs: the most frequent first, 10 of 12.
  const auto pairs = sec.find("<h3>Most confused pairs</h3>");
  ASSERT_NE(pairs, std::string::npos);
  EXPECT_NE(sec.find("<tr><td>True 5</td><td>&rarr; Pred 5</td><td>99</td></tr>", pairs), std::string::npos);
  EXPECT_LT(sec.find("True 5"), sec.find("True 0"));
  EXPECT_EQ(sec.find("True 11"), std::string::npos);
  // Misclassified: 8 of 10, paths escaped.
  EXPECT_NE(sec.find("<td class=\"path\">/data/a&lt;b&gt;&amp;c/r_52_100.jpg</td><td>Apricot 1</td><td>Apple Red 2</td>"
                     "<td>0.250</td>"),
            std::string::npos);
  EXPECT_EQ(html.find("a<b>&c"), std::string::npos) << "raw path leaked into the page";
  EXPECT_EQ(count(sec, "<td class=\"path\">"), 8u);
  EXPECT_NE(sec.find("First 8 of 10 recorded examples shown"), std::string::npos);
  // The rest of the page is unchanged, and the page stays self-contained.
  const auto start = html.find("<h2>Classifier</h2>");
  EXPECT_EQ(html.substr(0, start), rp::render_html(sample(3)).substr(0, start));
  EXPECT_EQ(html.find("<script"), std::string::npos);
  EXPECT_EQ(count(html, "http"), count(html, "xmlns=\"http://www.w3.org/2000/svg\""));
}

TEST(ReportClassifier, NoSectionWithoutOne) {
  const auto html = rp::render_html(sample(3));
  EXPECT_EQ(html.find("Classifier"), std::string::npos);
  EXPECT_EQ(html.find("Holdout"), std::string::npos);
}

TEST(ReportClassifier, NoteInsteadOfSectionWhenSkipped) {
  auto d = sample(3);
  d.classifier_note = "Classifier section skipped: classifier/metrics.json is malformed (<bad>).";
  const auto html = rp::render_html(d);
  EXPECT_EQ(html.find("<h2>Classifier</h2>"), std::string::npos);
  EXPECT_NE(html.find("<p class=\"note\">Classifier section skipped: classifier/metrics.json is malformed "
                      "(&lt;bad&gt;).</p>"),
            std::string::npos);
}

TEST(ReportClassifier, CollectReadsMetricsJson) {
  TempDir dir;
  dir.write_metrics(R"({"holdout": {"top1": 0.5, "top5": 0.75, "log_loss": 1.0, "rows": 4, "seed": 0,
      "method": "block holdout & guard"},
    "l2": 0.001, "l2_tried": [{"l2": 0.001, "top1": 0.5, "top5": 0.75, "log_loss": 1.0}],
    "per_class": [{"class": "Kiwi", "precision": 1.0, "recall": 0.5, "f1": 0.6666666666666666, "support": 4}],
    "confused_pairs": [{"label": "Kiwi", "predicted": "Lemon", "count": 2}],
    "misclassified": [{"path": "/in/Kiwi/<1>.jpg", "label": "Kiwi", "predicted": "Lemon", "probability": 0.6}],
    "sizes": {"rows": 40, "train_rows": 30, "guard_rows": 6, "holdout_rows": 4, "classes": 2, "inputs": 8,
              "on": "features"}})");
  const auto d = rp::collect(orchard::storage::open(dir.path().string()));
  ASSERT_TRUE(d.classifier.has_value()) << d.classifier_note;
  EXPECT_TRUE(d.classifier_note.empty());
  const auto& c = *d.classifier;
  EXPECT_DOUBLE_EQ(c.top1, 0.5);
  EXPECT_EQ(c.holdout_method, "block holdout & guard");
  EXPECT_EQ(c.rows, 40);
  EXPECT_EQ(c.holdout_rows, 4);
  EXPECT_EQ(c.inputs_on, "features");
  ASSERT_EQ(c.per_class.size(), 1u);
  EXPECT_EQ(c.per_class[0].support, 4);
  ASSERT_EQ(c.confused.size(), 1u);
  EXPECT_EQ(c.confused[0].predicted, "Lemon");
  ASSERT_EQ(c.misclassified.size(), 1u);
  EXPECT_EQ(c.misclassified[0].path, "/in/Kiwi/<1>.jpg");
  const auto html = rp::render_html(d);
  EXPECT_NE(html.find("<td>50.00 %</td>"), std::string::npos);
  EXPECT_NE(html.find("/in/Kiwi/&lt;1&gt;.jpg"), std::string::npos);
}

TEST(ReportClassifier, MalformedMetricsSkipTheSectionNotThePage) {
  const std::string good_tail = R"("l2": 0.001, "l2_tried": [], "per_class": [], "confused_pairs": [],
      "misclassified": [], "sizes": {"rows": 40, "classes": 2, "inputs": 8}})";
  for (const std::string& text : std::vector<std::string>{
           std::string("{\"holdout\": {\"top1\": 0.5,"), std::string(""), std::string("[1, 2]"), std::string("null"),
        R"({"holdout": {"top1": 0.5, "top5": 0.75, "method": "m"}, "l2": 0.001})",                    // fields missing
        R"({"holdout": {"top1": "high", "top5": 0.75, "method": "m"}, )" + good_tail,                 // wrong type
        R"({"holdout": {"top1": 1.5, "top5": 0.75, "method": "m"}, )" + good_tail,                    // out of range
        R"({"holdout": {"top1": 0.5, "top5": 0.75, "method": 7}, )" + good_tail,                      // method not text
        R"({"holdout": {"top1": 0.5, "top5": 0.75, "method": "m"}, "sizes": {"rows": -1, "classes": 2, "inputs": 8},
            "l2": 0.001, "l2_tried": [], "per_class": [], "confused_pairs": [], "misclassified": []})"}) {
    TempDir dir;
    dir.write_metrics(text);
    rp::ReportData d;
    ASSERT_NO_THROW(d = rp::collect(orchard::storage::open(dir.path().string()))) << text;
    EXPECT_FALSE(d.classifier.has_value()) << text;
    EXPECT_EQ(d.classifier_note.rfind("Classifier section skipped: classifier/metrics.json is malformed (", 0), 0u)
        << d.classifier_note;
    EXPECT_EQ(d.classifier_note.find('\n'), std::string::npos);
    const auto html = rp::render_html(d);
    EXPECT_EQ(html.find("<h2>Classifier</h2>"), std::string::npos);
    EXPECT_EQ(count(html, "Classifier section skipped"), 1u);
    EXPECT_NE(html.find("</html>"), std::string::npos);
  }
  // The same tail with valid values is read: the cases above fail for the reason they name.
  TempDir dir;
  dir.write_metrics(R"({"holdout": {"top1": 0.5, "top5": 0.75, "method": "m"}, )" + good_tail);
  EXPECT_TRUE(rp::collect(orchard::storage::open(dir.path().string())).classifier.has_value());
}

TEST(ReportClassifier, CollectWithoutMetricsHasNoClassifier) {
  TempDir dir;
  const auto d = rp::collect(orchard::storage::open(dir.path().string()));
  EXPECT_FALSE(d.classifier.has_value());
  EXPECT_TRUE(d.classifier_note.empty());
}
