// The HTML report: structure, escaping, self-containment, palette. The rendering itself is
// checked by tests/e2e/test_report_screenshot.py in headless Chromium.
#include <gtest/gtest.h>

#include <cstdio>
#include <regex>
#include <set>
#include <string>

#include "orchard/report/report.hpp"

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
