#include "orchard/classify/head.hpp"

#include <arrow/api.h>
#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <numeric>

#include "orchard/error.hpp"
#include "orchard/fingerprint.hpp"
#include "orchard/model/shape.hpp"
#include "orchard/pca/pca.hpp"
#include "orchard/storage/layout.hpp"
#include "orchard/table/tables.hpp"

namespace orchard::classify {
namespace {

const char* kWhat = "classifier model";

std::shared_ptr<arrow::Array> doubles(const std::vector<double>& v) {
  arrow::ListBuilder lb(arrow::default_memory_pool(), std::make_shared<arrow::DoubleBuilder>());
  storage::check(lb.Append(), kWhat);
  storage::check(static_cast<arrow::DoubleBuilder*>(lb.value_builder())->AppendValues(v), kWhat);
  return storage::value_or_throw(lb.Finish(), kWhat);
}

std::vector<double> first_doubles(const arrow::Table& t, const std::string& name, const std::string& file) {
  const auto col = table::checked_column(t, name, *arrow::list(arrow::float64()), file);
  const auto& l = static_cast<const arrow::ListArray&>(*col);
  const auto& v = static_cast<const arrow::DoubleArray&>(*l.values());
  return {v.raw_values() + l.value_offset(0), v.raw_values() + l.value_offset(0) + l.value_length(0)};
}

std::string meta_or(const std::shared_ptr<const arrow::KeyValueMetadata>& meta, const std::string& key) {
  if (!meta) return "";
  auto v = meta->Get(key);
  return v.ok() ? *v : "";
}

}  // namespace

std::string Head::fingerprint() const {
  Fingerprint f;
  for (const auto& c : classes) f.mix(c.c_str(), c.size() + 1);
  for (const auto* v : {&mean, &scale, &weights, &bias}) f.mix(v->data(), v->size() * sizeof(double));
  f.mix(on.data(), on.size());
  f.mix(pca_fingerprint.data(), pca_fingerprint.size());
  return f.hex();
}

void Head::probabilities(const double* x, std::int64_t rows, double* out) const {
  const int c = num_classes();
  std::vector<double> z(static_cast<std::size_t>(rows) * dim);
  for (std::int64_t r = 0; r < rows; ++r)
    for (int j = 0; j < dim; ++j) z[r * dim + j] = (x[r * dim + j] - mean[j]) / scale[j];
  for (std::int64_t r = 0; r < rows; ++r) std::copy(bias.begin(), bias.end(), out + r * c);
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasTrans, static_cast<int>(rows), c, dim, 1.0, z.data(), dim,
              weights.data(), dim, 1.0, out, c);
  for (std::int64_t r = 0; r < rows; ++r) {  // softmax, shifted by the row's largest logit
    double* p = out + r * c;
    const double top = *std::max_element(p, p + c);
    double sum = 0;
    for (int k = 0; k < c; ++k) sum += (p[k] = std::exp(p[k] - top));
    for (int k = 0; k < c; ++k) p[k] /= sum;
  }
}

void Head::probabilities_of_embeddings(const float* embeddings, std::int64_t rows, std::vector<double>& out) const {
  std::vector<double> x(static_cast<std::size_t>(rows) * dim);
  if (on == kOnPca) {
    std::vector<float> scores(static_cast<std::size_t>(rows) * pca.k);
    pca::project(projection, pca.k, embeddings, rows, pca.center, scores.data());
    std::copy(scores.begin(), scores.end(), x.begin());
  } else {
    std::copy(embeddings, embeddings + x.size(), x.begin());
  }
  out.assign(static_cast<std::size_t>(rows) * num_classes(), 0.0);
  probabilities(x.data(), rows, out.data());
}

void Head::use_pca(const pca::SavedModel& model) {
  pca = model;
  projection = pca::projection_of(model);
  pca_fingerprint = pca::fingerprint(model);
  pca_k = model.k;
}

Ranked top_k(const double* probabilities, int num_classes, int k) {
  k = std::clamp(k, 1, num_classes);
  std::vector<int> order(num_classes);
  std::iota(order.begin(), order.end(), 0);
  std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int a, int b) {
    return probabilities[a] != probabilities[b] ? probabilities[a] > probabilities[b] : a < b;
  });
  Ranked r;
  r.classes.assign(order.begin(), order.begin() + k);
  for (int i : r.classes) r.probabilities.push_back(static_cast<float>(probabilities[i]));
  return r;
}

void write_head(const storage::Location& file, const Head& h) {
  arrow::ListBuilder classes(arrow::default_memory_pool(), std::make_shared<arrow::StringBuilder>());
  storage::check(classes.Append(), kWhat);
  storage::check(static_cast<arrow::StringBuilder*>(classes.value_builder())->AppendValues(h.classes), kWhat);
  arrow::Int32Builder dim;
  storage::check(dim.Append(h.dim), kWhat);
  auto schema = arrow::schema(
      {arrow::field("classes", arrow::list(arrow::utf8())), arrow::field("dim", arrow::int32(), false),
       arrow::field("mean", arrow::list(arrow::float64())), arrow::field("scale", arrow::list(arrow::float64())),
       arrow::field("weights", arrow::list(arrow::float64())), arrow::field("bias", arrow::list(arrow::float64()))},
      arrow::key_value_metadata(
          {"on", "l2", "embedding_model", "pca_fingerprint", "pca_k", "fingerprint", "weights_layout"},
          {h.on, std::to_string(h.l2), h.embedding_model, h.pca_fingerprint, std::to_string(h.pca_k), h.fingerprint(),
           "classes x dim, row-major, applied to (x - mean) / scale; then + bias and softmax"}));
  auto t = arrow::Table::Make(schema, {storage::value_or_throw(classes.Finish(), kWhat),
                                       storage::value_or_throw(dim.Finish(), kWhat), doubles(h.mean),
                                       doubles(h.scale), doubles(h.weights), doubles(h.bias)});
  table::write_table(file, *t);
}

Head read_head(const storage::Location& trained) {
  const auto file = layout::classifier_model(trained);
  const std::string name = file.display();
  if (!storage::exists(file))
    throw Error(name + " is missing: " + trained.display() + " holds no classifier; run `orchard train " +
                trained.display() + "` first (on an OUTPUT of `orchard run`)");
  const auto t = table::read_table(file);
  if (t->num_rows() != 1) throw Error(name + ": expected one row; rerun `orchard train`");
  Head h;
  const auto meta = t->schema()->metadata();
  h.on = meta_or(meta, "on");
  h.l2 = std::atof(meta_or(meta, "l2").c_str());
  h.embedding_model = meta_or(meta, "embedding_model");
  h.pca_fingerprint = meta_or(meta, "pca_fingerprint");
  h.pca_k = std::atoi(meta_or(meta, "pca_k").c_str());
  h.dim = std::static_pointer_cast<arrow::Int32Array>(table::checked_column(*t, "dim", *arrow::int32(), name))->Value(0);
  const auto cl = table::checked_column(*t, "classes", *arrow::list(arrow::utf8()), name);
  const auto& lists = static_cast<const arrow::ListArray&>(*cl);
  const auto& names = static_cast<const arrow::StringArray&>(*lists.values());
  for (std::int64_t i = lists.value_offset(0); i < lists.value_offset(0) + lists.value_length(0); ++i)
    h.classes.push_back(names.GetString(i));
  h.mean = first_doubles(*t, "mean", name);
  h.scale = first_doubles(*t, "scale", name);
  h.weights = first_doubles(*t, "weights", name);
  h.bias = first_doubles(*t, "bias", name);
  const std::size_t c = h.classes.size(), d = static_cast<std::size_t>(std::max(h.dim, 0));
  if ((h.on != kOnPca && h.on != kOnFeatures) || c < 2 || d == 0 || h.mean.size() != d || h.scale.size() != d ||
      h.weights.size() != c * d || h.bias.size() != c)
    throw Error(name + ": malformed classifier (sizes do not agree); rerun `orchard train " + trained.display() + "`");
  if (const auto want = meta_or(meta, "fingerprint"); !want.empty() && want != h.fingerprint())
    throw Error(name + ": its numbers do not match its recorded fingerprint (damaged); rerun `orchard train " +
                trained.display() + "`");
  if (h.on == kOnPca) {
    const auto pca_file = layout::pca_model(trained);
    const auto model = pca::read_model(pca_file);
    if (pca::fingerprint(model) != h.pca_fingerprint || model.k != h.dim)
      throw Error(name + " was trained on another PCA than " + pca_file.display() + " (fingerprint " +
                  h.pca_fingerprint + ", found " + pca::fingerprint(model) + "); rerun `orchard train " +
                  trained.display() + "` after `orchard pca`");
    h.use_pca(model);
    if (h.pca.dim != model::kEmbeddingDim)
      throw Error(pca_file.display() + ": a PCA of " + std::to_string(h.pca.dim) + " dimensions, embeddings have " +
                  std::to_string(model::kEmbeddingDim));
  } else if (h.dim != model::kEmbeddingDim) {
    throw Error(name + ": a features head of " + std::to_string(h.dim) + " inputs, embeddings have " +
                std::to_string(model::kEmbeddingDim) + "; rerun `orchard train`");
  }
  return h;
}

void check_embedding_model(const Head& head, const std::string& model_fingerprint, const std::string& model_path) {
  if (head.embedding_model.empty() || head.embedding_model == model_fingerprint) return;
  throw Error("--model " + model_path + " computes " + model_fingerprint + ", but the classifier was trained on " +
              head.embedding_model + " embeddings; pass the --model the TRAINED output was featurized with");
}

}  // namespace orchard::classify
