// Writes a sample report page built from synthetic data (for the screenshot test and for looking
// at the layout without running the pipeline).
// Usage: orchard-report-sample OUT.html [CLASSES (default 141)]
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <random>
#include <string>

#include "orchard/model/shape.hpp"
#include "orchard/report/report.hpp"

int main(int argc, char** argv) {
  if (argc < 2) {
    std::cerr << "usage: " << argv[0] << " OUT.html [CLASSES]\n";
    return 2;
  }
  const int classes = argc > 2 ? std::stoi(argv[2]) : 141;
  const char* fruits[] = {"Apple Braeburn", "Banana", "Cherry", "Grape White", "Kiwi", "Lemon", "Mango", "Pear",
                          "Peach", "Tomato", "Walnut", "Strawberry"};
  orchard::report::ReportData d;
  d.title = "sample <OUTPUT> & co";
  d.images_listed = 0;
  d.timings_s = {{"featurize", 312.4}, {"pca", 4.2}, {"validate", 1.1}};
  d.error_reasons = {{"truncated JPEG", 3}, {"not an image: <html>", 1}};
  double total = 0;
  for (int i = 0; i < orchard::model::kEmbeddingDim; ++i) total += std::pow(i + 1.0, -1.5);
  double cum = 0;
  for (int i = 0; i < orchard::model::kEmbeddingDim; ++i) {
    d.explained_ratio.push_back(std::pow(i + 1.0, -1.5) / total);
    cum += d.explained_ratio.back();
    if (d.k == 0 && cum >= 0.90) d.k = i + 1;
  }
  std::mt19937 rng(42);
  std::normal_distribution<float> g(0, 1);
  for (int c = 0; c < classes; ++c) {
    const std::string label = c == 0 ? std::string("<b>&\"quoted\"") : std::string(fruits[c % 12]) + " " + std::to_string(c / 12 + 1);
    const int n = 20 + (c * 37) % 60;
    d.images_per_class[label] = n * 5;
    d.images_listed += n * 5;
    const float a = 0.7f * c, r = 2.0f + 0.12f * c;
    for (int j = 0; j < n; ++j) d.scatter.push_back({r * std::cos(a) + g(rng), r * std::sin(a) + g(rng), label});
  }
  d.images_failed = 4;
  d.images_embedded = d.images_listed;
  d.images_listed += d.images_failed;
  d.images_per_s = d.images_embedded / 312.4;
  std::ofstream out(argv[1], std::ios::binary);
  out << orchard::report::render_html(d);
  if (!out) {
    std::cerr << "cannot write " << argv[1] << "\n";
    return 1;
  }
  return 0;
}
