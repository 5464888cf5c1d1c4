// Edges of the pipeline's small pieces that the end-to-end runs never reach: shard lists, batched
// reading of vector tables, the report's collection, saved PCA models that contradict themselves,
// retries nested in retries, PCA on an incomplete OUTPUT.
#include <gtest/gtest.h>

#include <arrow/api.h>
#include <unistd.h>

#include <atomic>
#include <filesystem>
#include <string>
#include <vector>

#include "orchard/dataset/manifest.hpp"
#include "orchard/error.hpp"
#include "orchard/pca/job.hpp"
#include "orchard/report/collect.hpp"
#include "orchard/storage/layout.hpp"
#include "orchard/storage/storage.hpp"
#include "orchard/table/tables.hpp"

namespace {
using orchard::Error;
namespace st = orchard::storage;
namespace ly = orchard::layout;
namespace tb = orchard::table;

// A fresh folder under the system's temp dir, removed at the end of the test.
class TempDir {
 public:
  TempDir() {
    path_ = std::filesystem::temp_directory_path() /
            ("orchard-edges-" + std::to_string(::getpid()) + "-" + std::to_string(counter_++));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() { std::filesystem::remove_all(path_); }
  st::Location loc() const { return st::open(path_.string()); }

 private:
  static inline int counter_ = 0;
  std::filesystem::path path_;
};

// n rows of dim values, row i = (i, i, ...), paths "/in/<label>/<i>.jpg".
tb::VectorRows rows_of(int n, int dim, const std::string& label = "Kiwi") {
  tb::VectorRows r;
  r.dim = dim;
  for (int i = 0; i < n; ++i) {
    r.paths.push_back("/in/" + label + "/" + std::to_string(i) + ".jpg");
    r.labels.push_back(label);
    for (int j = 0; j < dim; ++j) r.values.push_back(static_cast<float>(i + 1));
  }
  return r;
}

std::string message_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(ShardList, SinglesRangesAndDuplicates) {
  using orchard::dataset::parse_shard_list;
  EXPECT_EQ(parse_shard_list("0,3,5-7", 10), (std::vector<int>{0, 3, 5, 6, 7}));
  EXPECT_EQ(parse_shard_list("7,5-7,,0", 10), (std::vector<int>{0, 5, 6, 7})) << "sorted, once each, empty items skipped";
  EXPECT_EQ(parse_shard_list("9", 10), (std::vector<int>{9}));
  EXPECT_EQ(parse_shard_list("", 10), (std::vector<int>{}));
}

TEST(ShardList, RefusesWhatIsNotAShardList) {
  using orchard::dataset::parse_shard_list;
  for (const std::string bad : {"3x", "1-3-5", "-2", " 4", "4 ", "a", "1-", "-", "5-3", "10", "0-10", "+1",
                                "99999999999999999999"}) {
    const std::string m = message_of([&] { parse_shard_list(bad, 10); });
    EXPECT_NE(m.find("shard list"), std::string::npos) << "'" << bad << "' was accepted";
  }
}

TEST(ForEachBatch, BatchBoundariesKeepEveryRowInOrder) {
  TempDir dir;
  for (const int n : {0, 1, 4, 5, 9}) {
    const auto file = dir.loc().child("part-" + std::to_string(n) + ".parquet");
    tb::write_vectors(file, rows_of(n, 3), "features");
    std::vector<int> sizes;
    std::vector<std::string> paths;
    tb::for_each_batch(file, "features", 3, 4, [&](const tb::VectorRows& rows) {
      sizes.push_back(static_cast<int>(rows.size()));
      for (std::size_t i = 0; i < rows.size(); ++i) {
        EXPECT_EQ(rows.values[i * 3], static_cast<float>(paths.size() + 1)) << "row " << paths.size();
        paths.push_back(rows.paths[i]);
      }
    });
    EXPECT_EQ(static_cast<int>(paths.size()), n) << n << " rows";
    for (const int s : sizes) EXPECT_LE(s, 4) << "a batch never exceeds batch_rows";
    for (int i = 0; i < n; ++i) EXPECT_EQ(paths[i], "/in/Kiwi/" + std::to_string(i) + ".jpg");
  }
}

TEST(ForEachBatch, WidthFromTheFirstRowAndMismatchesNamed) {
  TempDir dir;
  const auto file = dir.loc().child("part-00000.parquet");
  tb::write_vectors(file, rows_of(3, 5), "pca");
  int dim = -1;
  tb::for_each_batch(file, "pca", 0, 10, [&](const tb::VectorRows& rows) { dim = rows.dim; });
  EXPECT_EQ(dim, 5) << "dim 0 takes the first row's width";
  const std::string m = message_of([&] { tb::for_each_batch(file, "pca", 7, 10, [](const tb::VectorRows&) {}); });
  EXPECT_NE(m.find("row 0"), std::string::npos) << m;
  EXPECT_NE(m.find("expected 7"), std::string::npos) << m;
}

TEST(ForEachBatch, NullVectorIsNamedNotWidthMinusOne) {
  TempDir dir;
  const auto file = dir.loc().child("part-00000.parquet");
  // path, label, features with a null first row (a writer other than Orchard's).
  arrow::StringBuilder paths, labels;
  ASSERT_TRUE(paths.AppendValues({"/in/a.jpg", "/in/b.jpg"}).ok());
  ASSERT_TRUE(labels.AppendValues({"in", "in"}).ok());
  auto values = std::make_shared<arrow::FloatBuilder>();
  arrow::ListBuilder lists(arrow::default_memory_pool(), values);
  ASSERT_TRUE(lists.AppendNull().ok());
  ASSERT_TRUE(lists.Append().ok());
  ASSERT_TRUE(values->AppendValues({1.0f, 2.0f}).ok());
  auto schema = arrow::schema({arrow::field("path", arrow::utf8()), arrow::field("label", arrow::utf8()),
                               arrow::field("features", arrow::list(arrow::float32()))});
  auto t = arrow::Table::Make(schema, {*paths.Finish(), *labels.Finish(), *lists.Finish()});
  tb::write_table(file, *t);
  const std::string m = message_of([&] { tb::for_each_batch(file, "features", 0, 10, [](const tb::VectorRows&) {}); });
  EXPECT_NE(m.find("null"), std::string::npos) << m;
  EXPECT_NE(m.find("/in/a.jpg"), std::string::npos) << m;
  EXPECT_EQ(m.find("has -1 values"), std::string::npos) << "no width of -1: " << m;
}

TEST(ReportCollect, CountsReasonsClassesAndSamplesTheScatter) {
  TempDir dir;
  const auto out = dir.loc();
  st::make_dirs(ly::errors_dir(out));
  st::make_dirs(ly::pca_features_dir(out));
  tb::ErrorRows bad;
  bad.paths = {"/in/x/1.jpg", "/in/x/2.jpg", "/in/x/3.jpg"};
  bad.errors = {"empty file (0 bytes); re-download", "corrupt JPEG (libjpeg error while x): y", "empty file (0 bytes); re-download"};
  tb::write_errors(ly::error_part(out, 0), bad);
  tb::write_vectors(ly::pca_part(out, 0), rows_of(6, 2, "Kiwi"), "pca");
  tb::write_vectors(ly::pca_part(out, 1), rows_of(4, 2, "Lemon"), "pca");
  st::write_text(ly::featurize_json(out), R"({"images": 13, "seconds": 2.0, "images_per_s": 6.5})");
  const auto d = orchard::report::collect(out, 5);
  EXPECT_EQ(d.images_listed, 13);
  EXPECT_EQ(d.images_failed, 3);
  EXPECT_EQ(d.images_embedded, 10);
  EXPECT_EQ(d.images_per_class.at("Kiwi"), 6);
  EXPECT_EQ(d.images_per_class.at("Lemon"), 4);
  EXPECT_EQ(d.error_reasons.at("empty file (0 bytes); re-download"), 2);
  EXPECT_EQ(d.error_reasons.at("corrupt JPEG (libjpeg error while x)"), 1) << "the detail after ':' is dropped";
  EXPECT_LE(d.scatter.size(), 5u) << "at most max_points";
  EXPECT_GE(d.scatter.size(), 4u) << "evenly sampled, not truncated to one class";
  EXPECT_EQ(d.k, 0) << "no pca/model.parquet: no k";
}

TEST(PcaModel, KThatContradictsTheComponentsIsRefused) {
  TempDir dir;
  const auto out = dir.loc();
  // Two parts of 1280-d rows; fit k = 3, then rewrite model.parquet with k = 5.
  st::make_dirs(ly::features_dir(out));
  tb::VectorRows rows = rows_of(8, 1280);
  for (std::size_t i = 0; i < rows.values.size(); ++i) rows.values[i] += static_cast<float>((i * 7919) % 13);
  tb::write_vectors(ly::feature_part(out, 0), rows, "features");
  orchard::pca::JobSummary s;
  orchard::pca::fit_and_save(out, orchard::pca::part_moments(out, {0}, 1), {0.9, 3, false, "", 1, {}}, s);
  auto t = tb::read_table(ly::pca_model(out));
  arrow::Int32Builder k;
  ASSERT_TRUE(k.Append(5).ok());
  auto changed = *t->SetColumn(0, t->schema()->field(0), std::make_shared<arrow::ChunkedArray>(*k.Finish()));
  tb::write_table(ly::pca_model(out), *changed);
  const std::string m = message_of([&] { orchard::pca::read_model(ly::pca_model(out)); });
  EXPECT_NE(m.find("k = 5"), std::string::npos) << m;
  EXPECT_NE(m.find("3 components"), std::string::npos) << m;
}

TEST(PcaJob, RefusesAnIncompleteOutputNamingTheMissingShards) {
  TempDir dir, input;
  const auto out = dir.loc();
  st::make_dirs(input.loc().child("Kiwi"));
  for (int i = 0; i < 5; ++i) st::write_text(input.loc().child("Kiwi/" + std::to_string(i) + ".jpg"), "x");
  const auto m = orchard::dataset::plan(input.loc(), out, {input.loc().uri(), "*.jpg", 0, 2, ""});
  ASSERT_EQ(m.num_shards(), 3);
  st::make_dirs(ly::features_dir(out));
  tb::write_vectors(ly::feature_part(out, 0), rows_of(2, 1280), "features");
  tb::write_vectors(ly::feature_part(out, 2), rows_of(1, 1280), "features");
  bool changed = false;
  orchard::pca::JobOptions o;
  o.before_writing = [&] { changed = true; };
  const std::string msg = message_of([&] { orchard::pca::run_job(out, o); });
  EXPECT_NE(msg.find("1 of 3 shards"), std::string::npos) << msg;
  EXPECT_NE(msg.find("part-00001.parquet"), std::string::npos) << msg;
  EXPECT_NE(msg.find("orchard featurize"), std::string::npos) << "says how to finish: " << msg;
  EXPECT_FALSE(changed) << "refused before anything in OUTPUT changed";
  EXPECT_FALSE(st::exists(ly::pca_model(out)));
}

TEST(PcaJob, OptionsRefusedBeforeAnyWork) {
  for (const double v : {0.0, -0.5, 1.5}) {
    const std::string m = message_of([&] { orchard::pca::check_options({v, 0, false, "", 0, {}}); });
    EXPECT_NE(m.find("--variance"), std::string::npos) << v << ": " << m;
  }
  EXPECT_EQ(message_of([] { orchard::pca::check_options({1.0, 0, false, "", 0, {}}); }), "");
  EXPECT_NE(message_of([] { orchard::pca::check_options({0.9, 1281, false, "", 0, {}}); }).find("--k"), std::string::npos);
}

TEST(Retries, SpentRetriesAreNotRetriedByAnOuterLoop) {
  ::setenv("ORCHARD_STORAGE_ATTEMPTS", "3", 1);
  std::atomic<int> calls{0};
  std::string message;
  try {
    st::with_retries("writing out/part-00000.parquet", [&] {
      st::with_retries("reading out/features/part-00000.parquet", [&] {
        ++calls;
        throw Error::storage("out/features/part-00000.parquet: cannot read: HTTP status 503");
      });
    });
  } catch (const Error& e) {
    message = e.what();
    EXPECT_TRUE(e.is_storage());
  }
  ::unsetenv("ORCHARD_STORAGE_ATTEMPTS");
  EXPECT_EQ(calls.load(), 3) << "3 attempts in all, not 3 x 3";
  EXPECT_NE(message.find("gave up on reading"), std::string::npos) << "names the operation that failed: " << message;
  EXPECT_EQ(message.find("gave up on writing"), std::string::npos) << message;
}

}  // namespace
