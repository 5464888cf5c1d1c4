#include "orchard/pca/files.hpp"

#include <arrow/api.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>

#include "orchard/error.hpp"
#include "orchard/fingerprint.hpp"
#include "orchard/model/shape.hpp"
#include "orchard/table/tables.hpp"

namespace orchard::pca {
namespace {
std::shared_ptr<arrow::Array> doubles(const double* v, std::size_t n) {
  arrow::DoubleBuilder b;
  storage::check(b.AppendValues(v, static_cast<std::int64_t>(n)), "pca model");
  return storage::value_or_throw(b.Finish(), "pca model");
}

std::shared_ptr<arrow::Array> one_list(const std::shared_ptr<arrow::Array>& values) {
  arrow::Int32Builder ob;
  storage::check(ob.AppendValues({0, static_cast<std::int32_t>(values->length())}), "pca model");
  auto offs = storage::value_or_throw(ob.Finish(), "pca model");
  return storage::value_or_throw(arrow::ListArray::FromArrays(*offs, *values), "pca model");
}

// The values of row 0 of a list<double> column.
std::vector<double> first_list(const arrow::Table& t, const std::string& name, const std::string& file) {
  const auto col = table::checked_column(t, name, *arrow::list(arrow::float64()), file);
  const auto& lists = static_cast<const arrow::ListArray&>(*col);
  if (lists.length() < 1 || lists.IsNull(0)) throw Error(file + ": column '" + name + "' is empty");
  const auto& v = static_cast<const arrow::DoubleArray&>(*lists.values());
  const auto off = lists.value_offset(0);
  return {v.raw_values() + off, v.raw_values() + off + lists.value_length(0)};
}

constexpr const char* kCentred = "centred: components . (x - mean)";
}  // namespace

void write_model(const storage::Location& file, const Fit& f, int k, bool center) {
  std::vector<std::int32_t> comp_offsets;
  for (int i = 0; i <= k; ++i) comp_offsets.push_back(i * f.dim);
  arrow::Int32Builder ob;
  storage::check(ob.AppendValues(comp_offsets), "pca model");
  auto rows = storage::value_or_throw(
      arrow::ListArray::FromArrays(*storage::value_or_throw(ob.Finish(), "pca model"),
                                   *doubles(f.components.data(), static_cast<std::size_t>(k) * f.dim)),
      "pca model");
  arrow::Int32Builder kb;
  storage::check(kb.Append(k), "pca model");
  auto schema = arrow::schema(
      {arrow::field("k", arrow::int32(), false), arrow::field("mean", arrow::list(arrow::float64())),
       arrow::field("components", arrow::list(arrow::list(arrow::float64()))),
       arrow::field("eigenvalues", arrow::list(arrow::float64())),
       arrow::field("explained_variance_ratio", arrow::list(arrow::float64()))},
      arrow::key_value_metadata({"projection", "rows"},
                                {center ? kCentred
                                        : "mllib: components . x (no centring, as PCAModel.transform)",
                                 std::to_string(f.count)}));
  auto table = arrow::Table::Make(
      schema, {storage::value_or_throw(kb.Finish(), "pca model"), one_list(doubles(f.mean.data(), f.dim)),
               one_list(rows), one_list(doubles(f.eigenvalues.data(), f.dim)),
               one_list(doubles(f.explained_ratio.data(), f.dim))});
  table::write_table(file, *table);
}

double SavedModel::cumulative() const {
  double c = 0;
  for (int i = 0; i < k && i < static_cast<int>(explained_ratio.size()); ++i) c += explained_ratio[i];
  return c;
}

std::string fingerprint(const SavedModel& m) {
  Fingerprint f;  // over the numbers' bytes
  const std::int32_t head[3] = {m.k, m.dim, m.center ? 1 : 0};
  f.mix(head, sizeof head);
  f.mix(m.mean.data(), m.mean.size() * sizeof(double));
  f.mix(m.components.data(), std::min(m.components.size(), static_cast<std::size_t>(m.k) * m.dim) * sizeof(double));
  return f.hex();
}

Fit projection_of(const SavedModel& m) {
  Fit f;
  f.dim = m.dim;
  f.mean = m.mean;
  f.components = m.components;
  return f;
}

SavedModel read_model(const storage::Location& file) {
  const std::string name = file.display();
  auto t = table::read_table(file);
  if (t->num_rows() != 1) throw Error(name + ": expected one row, found " + std::to_string(t->num_rows()));
  SavedModel m;
  m.k = std::static_pointer_cast<arrow::Int32Array>(table::checked_column(*t, "k", *arrow::int32(), name))->Value(0);
  m.mean = first_list(*t, "mean", name);
  m.dim = static_cast<int>(m.mean.size());
  m.explained_ratio = first_list(*t, "explained_variance_ratio", name);
  const auto comps = table::checked_column(*t, "components", *arrow::list(arrow::list(arrow::float64())), name);
  const auto& outer = static_cast<const arrow::ListArray&>(*comps);
  const auto& rows = static_cast<const arrow::ListArray&>(*outer.values());
  const auto& v = static_cast<const arrow::DoubleArray&>(*rows.values());
  if (m.k < 1 || m.k != outer.value_length(0))
    throw Error(name + ": k = " + std::to_string(m.k) + " but it holds " + std::to_string(outer.value_length(0)) +
                " components; rerun `orchard pca`");
  for (std::int64_t r = outer.value_offset(0); r < outer.value_offset(0) + outer.value_length(0); ++r) {
    if (rows.value_length(r) != m.dim)
      throw Error(name + ": component " + std::to_string(r) + " has " + std::to_string(rows.value_length(r)) +
                  " values, the mean has " + std::to_string(m.dim) + "; rerun `orchard pca`");
    m.components.insert(m.components.end(), v.raw_values() + rows.value_offset(r),
                        v.raw_values() + rows.value_offset(r) + m.dim);
  }
  if (const auto meta = t->schema()->metadata()) {
    if (auto p = meta->Get("projection"); p.ok()) m.center = *p == kCentred;
    if (auto r = meta->Get("rows"); r.ok()) m.rows = std::atoll(r->c_str());
  }
  return m;
}

void write_moments(const storage::Location& file, const Moments& m) {
  arrow::Int32Builder dim;
  arrow::Int64Builder count;
  storage::check(dim.Append(m.dim), "moments");
  storage::check(count.Append(m.count), "moments");
  const auto packed = m.packed_gram();
  auto schema = arrow::schema({arrow::field("dim", arrow::int32(), false), arrow::field("count", arrow::int64(), false),
                               arrow::field("sum", arrow::list(arrow::float64()), false),
                               arrow::field("gram_upper", arrow::list(arrow::float64()), false)},
                              arrow::key_value_metadata({"gram"}, {"centred scatter sum, upper triangle row by row"}));
  auto table = arrow::Table::Make(schema, {storage::value_or_throw(dim.Finish(), "moments"),
                                           storage::value_or_throw(count.Finish(), "moments"),
                                           one_list(doubles(m.sum.data(), m.sum.size())),
                                           one_list(doubles(packed.data(), packed.size()))});
  table::write_table(file, *table);
}

Moments read_moments(const storage::Location& file) {
  const std::string name = file.display();
  auto t = table::read_table(file);
  const auto dims = std::static_pointer_cast<arrow::Int32Array>(table::checked_column(*t, "dim", *arrow::int32(), name));
  const auto counts = std::static_pointer_cast<arrow::Int64Array>(table::checked_column(*t, "count", *arrow::int64(), name));
  const auto sums = table::checked_column(*t, "sum", *arrow::list(arrow::float64()), name);
  const auto grams = table::checked_column(*t, "gram_upper", *arrow::list(arrow::float64()), name);
  auto values = [](const std::shared_ptr<arrow::Array>& a, std::int64_t r) {
    const auto& l = static_cast<const arrow::ListArray&>(*a);
    const auto& v = static_cast<const arrow::DoubleArray&>(*l.values());
    return std::vector<double>(v.raw_values() + l.value_offset(r), v.raw_values() + l.value_offset(r) + l.value_length(r));
  };
  Moments all;
  for (std::int64_t r = 0; r < t->num_rows(); ++r) {
    try {
      all.merge(Moments::from_packed(dims->Value(r), counts->Value(r), values(sums, r), values(grams, r)));
    } catch (const Error& e) {
      throw Error(name + ": row " + std::to_string(r) + ": " + e.what());
    }
  }
  if (all.dim == 0) all = Moments(model::kEmbeddingDim);
  return all;
}

}  // namespace orchard::pca
