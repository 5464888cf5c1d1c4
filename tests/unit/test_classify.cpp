// The classifier's pieces: frame numbers and the block holdout, the head's softmax and top-k, and
// the head's file (round trip, refusal of another PCA).
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <set>

#include "orchard/classify/head.hpp"
#include "orchard/classify/train.hpp"
#include "orchard/error.hpp"
#include "orchard/storage/layout.hpp"

namespace orchard::classify {
namespace {

TEST(Classify, FrameNumbersOfFruits360Names) {
  auto f = frame_of("/d/Test/Kiwi 1/123_100.jpg", "Kiwi 1");
  EXPECT_EQ(f.session, "Kiwi 1/");
  EXPECT_EQ(f.number, 123);
  f = frame_of("s3://b/Kiwi 1/r_7_100.jpg", "Kiwi 1");
  EXPECT_EQ(f.session, "Kiwi 1/r");
  EXPECT_EQ(f.number, 7);
  f = frame_of("/x/Apple 6/r2_55_100.jpg", "Apple 6");
  EXPECT_EQ(f.session, "Apple 6/r2");
  EXPECT_EQ(f.number, 55);
  f = frame_of("/x/Apple 6/IMG_0001.jpg", "Apple 6");  // not a frame: a session of its own
  EXPECT_EQ(f.session, "Apple 6/IMG_0001.jpg");
  EXPECT_EQ(f.number, -1);
}

// 2 sessions x 200 frames of 3 classes.
void frames(std::vector<std::string>& paths, std::vector<std::string>& labels) {
  for (const char* c : {"A", "B", "C"})
    for (const char* s : {"", "r_"})
      for (int n = 0; n < 200; ++n) {
        paths.push_back(std::string("/in/") + c + "/" + s + std::to_string(n) + "_100.jpg");
        labels.push_back(c);
      }
}

TEST(Classify, BlockHoldoutHoldsWholeBlocksWithAGuard) {
  std::vector<std::string> paths, labels;
  frames(paths, labels);
  const auto side = block_holdout(paths, labels, 0.2, 0);
  std::set<std::pair<std::string, int>> held;
  int n_held = 0;
  for (std::size_t i = 0; i < paths.size(); ++i) {
    const auto f = frame_of(paths[i], labels[i]);
    if (side[i] == 1) held.insert({f.session, f.number / kBlockFrames}), ++n_held;
  }
  // 6 sessions x 10 blocks, 20 % of them: 12 whole blocks of 20 frames.
  EXPECT_EQ(held.size(), 12u);
  EXPECT_EQ(n_held, 12 * kBlockFrames);
  for (std::size_t i = 0; i < paths.size(); ++i) {
    const auto f = frame_of(paths[i], labels[i]);
    const bool in_held = held.count({f.session, f.number / kBlockFrames}) > 0;
    EXPECT_EQ(side[i] == 1, in_held) << paths[i];
    if (in_held) continue;
    // A training photo is never within kGuardFrames of a held-out one of the same video.
    bool near = false;
    for (int d = -kGuardFrames; d <= kGuardFrames; ++d)
      near |= f.number + d >= 0 && held.count({f.session, (f.number + d) / kBlockFrames}) > 0;
    EXPECT_EQ(side[i] == 2, near) << paths[i];
  }
}

TEST(Classify, BlockHoldoutDependsOnTheSeedOnly) {
  std::vector<std::string> paths, labels;
  frames(paths, labels);
  EXPECT_EQ(block_holdout(paths, labels, 0.1, 5), block_holdout(paths, labels, 0.1, 5));
  EXPECT_NE(block_holdout(paths, labels, 0.1, 5), block_holdout(paths, labels, 0.1, 6));
}

Head tiny_head() {
  Head h;
  h.on = kOnFeatures;
  h.dim = 2;
  h.classes = {"a", "b", "c"};
  h.mean = {1, 0};
  h.scale = {2, 1};
  h.weights = {1, 0, 0, 1, -1, -1};
  h.bias = {0, 0.5, 0};
  return h;
}

TEST(Classify, HeadIsSoftmaxOfStandardizedInputs) {
  const Head h = tiny_head();
  const double x[2] = {3, 2};  // standardized: (1, 2); logits 1, 2.5, -3
  double p[3];
  h.probabilities(x, 1, p);
  const double z[3] = {1, 2.5, -3};
  double sum = 0;
  for (double v : z) sum += std::exp(v);
  for (int k = 0; k < 3; ++k) EXPECT_NEAR(p[k], std::exp(z[k]) / sum, 1e-12);
  const auto r = top_k(p, 3, 2);
  EXPECT_EQ(r.classes, (std::vector<int>{1, 0}));
  EXPECT_FLOAT_EQ(r.probabilities[0], static_cast<float>(p[1]));
  EXPECT_EQ(top_k(p, 3, 99).classes.size(), 3u);  // at most every class
  EXPECT_EQ(top_k(p, 3, 0).classes.size(), 1u);
}

TEST(Classify, HeadFingerprintFollowsItsNumbers) {
  Head a = tiny_head(), b = tiny_head();
  EXPECT_EQ(a.fingerprint(), b.fingerprint());
  b.weights[3] += 1e-9;
  EXPECT_NE(a.fingerprint(), b.fingerprint());
}

TEST(Classify, MissingClassifierNamesTheFix) {
  const auto dir = std::filesystem::temp_directory_path() / "orchard-no-classifier";
  std::filesystem::create_directories(dir);
  try {
    read_head(storage::open(dir.string()));
    FAIL() << "read_head of a folder without classifier/ must throw";
  } catch (const Error& e) {
    EXPECT_NE(std::string(e.what()).find("orchard train"), std::string::npos) << e.what();
  }
  std::filesystem::remove_all(dir);
}

}  // namespace
}  // namespace orchard::classify
