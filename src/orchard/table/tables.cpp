#include "orchard/table/tables.hpp"

#include <parquet/arrow/reader.h>
#include <parquet/arrow/writer.h>

#include <arrow/array/concatenate.h>
#include <arrow/io/memory.h>

#include <algorithm>
#include <cmath>
#include <cstdio>

#include "orchard/error.hpp"
#include "orchard/storage/layout.hpp"

namespace orchard::table {
using storage::check;
using storage::value_or_throw;

std::string vector_problem(const float* v, int dim) {
  bool any_nonzero = false;
  for (int j = 0; j < dim; ++j) {
    if (!std::isfinite(v[j])) return "non-finite values";
    any_nonzero |= v[j] != 0.0f;
  }
  return any_nonzero ? "" : "an all-zero vector";
}

std::shared_ptr<arrow::Schema> vector_schema(const std::string& column) {
  return arrow::schema({arrow::field("path", arrow::utf8(), false),
                        arrow::field("label", arrow::utf8(), false),
                        arrow::field(column, arrow::list(arrow::float32()), false)});
}

std::shared_ptr<arrow::Schema> error_schema() {
  return arrow::schema({arrow::field("path", arrow::utf8(), false),
                        arrow::field("error", arrow::utf8(), false)});
}

namespace {
constexpr std::int64_t kRowGroupRows = 8192;  // ~40 MB of 1280-d vectors per row group

std::shared_ptr<parquet::WriterProperties> writer_properties() {
  return parquet::WriterProperties::Builder().compression(parquet::Compression::SNAPPY)->build();
}
// store_schema keeps the schema's key-value metadata (the manifest's options).
std::shared_ptr<parquet::ArrowWriterProperties> arrow_writer_properties() {
  return parquet::ArrowWriterProperties::Builder().store_schema()->build();
}

std::shared_ptr<arrow::Array> strings(const std::vector<std::string>& v) {
  arrow::StringBuilder b;
  check(b.AppendValues(v), "building a string column");
  return value_or_throw(b.Finish(), "building a string column");
}
}  // namespace

void write_table(const storage::Location& file, const arrow::Table& table) {
  storage::write_atomic(file, [&](const auto& out) {
    check(parquet::arrow::WriteTable(table, arrow::default_memory_pool(), out, kRowGroupRows,
                                     writer_properties(), arrow_writer_properties()),
          file.display() + ": cannot write Parquet");
  });
}

namespace {
std::shared_ptr<arrow::Table> vector_table(const VectorRows& rows, const std::string& column, const std::string& where) {
  const auto n = static_cast<std::int64_t>(rows.size());
  if (static_cast<std::int64_t>(rows.values.size()) != n * rows.dim || rows.labels.size() != rows.paths.size())
    throw Error(where + ": internal error, " + std::to_string(rows.values.size()) + " values for " +
                std::to_string(n) + " rows of " + std::to_string(rows.dim));
  arrow::FloatBuilder fb;
  check(fb.AppendValues(rows.values), "building vectors");
  auto values = value_or_throw(fb.Finish(), "building vectors");
  std::vector<std::int32_t> offsets(n + 1);
  for (std::int64_t i = 0; i <= n; ++i) offsets[i] = static_cast<std::int32_t>(i * rows.dim);
  arrow::Int32Builder ob;
  check(ob.AppendValues(offsets), "building vectors");
  auto offs = value_or_throw(ob.Finish(), "building vectors");
  auto lists = value_or_throw(arrow::ListArray::FromArrays(*offs, *values), "building vectors");
  return arrow::Table::Make(vector_schema(column), {strings(rows.paths), strings(rows.labels), lists});
}
}  // namespace

void write_vectors_streamed(const storage::Location& file, const std::string& column,
                            const std::function<void(const EmitFn& emit)>& produce) {
  storage::write_atomic(file, [&](const auto& out) {
    auto writer = value_or_throw(
        parquet::arrow::FileWriter::Open(*vector_schema(column), arrow::default_memory_pool(), out,
                                         writer_properties(), arrow_writer_properties()),
        file.display() + ": cannot write Parquet");
    produce([&](const VectorRows& rows) {
      check(writer->WriteTable(*vector_table(rows, column, file.display()), kRowGroupRows), file.display() + ": cannot write Parquet");
    });
    check(writer->Close(), file.display() + ": cannot finish Parquet");
  });
}

void write_vectors(const storage::Location& file, const VectorRows& rows, const std::string& column) {
  write_vectors_streamed(file, column, [&](const EmitFn& emit) { emit(rows); });
}

void write_predictions(const storage::Location& file, const PredictionRows& rows) {
  const std::string what = file.display();
  arrow::ListBuilder labels(arrow::default_memory_pool(), std::make_shared<arrow::StringBuilder>());
  arrow::ListBuilder probs(arrow::default_memory_pool(), std::make_shared<arrow::FloatBuilder>());
  for (std::size_t i = 0; i < rows.size(); ++i) {
    check(labels.Append(), what);
    check(static_cast<arrow::StringBuilder*>(labels.value_builder())->AppendValues(rows.top_labels[i]), what);
    check(probs.Append(), what);
    check(static_cast<arrow::FloatBuilder*>(probs.value_builder())->AppendValues(rows.top_probabilities[i]), what);
  }
  auto schema = arrow::schema({arrow::field("path", arrow::utf8(), false), arrow::field("label", arrow::utf8(), false),
                               arrow::field("top_labels", arrow::list(arrow::utf8())),
                               arrow::field("top_probabilities", arrow::list(arrow::float32()))});
  auto table = arrow::Table::Make(schema, {strings(rows.paths), strings(rows.labels),
                                           value_or_throw(labels.Finish(), what), value_or_throw(probs.Finish(), what)});
  write_table(file, *table);
}

void write_errors(const storage::Location& file, const ErrorRows& rows) {
  auto table = arrow::Table::Make(error_schema(), {strings(rows.paths), strings(rows.errors)});
  write_table(file, *table);
}

namespace {
// A local file is read in place; an object is fetched whole with one retried GET (a part is a few
// MB) instead of many ranged GETs that each could fail.
std::shared_ptr<arrow::io::RandomAccessFile> open_for_parquet(const storage::Location& file) {
  if (file.object_store()) return std::make_shared<arrow::io::BufferReader>(storage::read_file(file));
  return value_or_throw(file.fs->OpenInputFile(file.path), file.display() + ": cannot open");
}
}  // namespace

std::shared_ptr<arrow::Table> read_table(const storage::Location& file) {
  auto in = open_for_parquet(file);
  auto reader = value_or_throw(parquet::arrow::OpenFile(in, arrow::default_memory_pool()),
                               file.display() + ": not a readable Parquet file");
  auto table = value_or_throw(reader->ReadTable(), file.display() + ": cannot read Parquet");
  return value_or_throw(table->CombineChunks(), file.display() + ": cannot read Parquet");
}

std::shared_ptr<arrow::Array> checked_column(const arrow::Table& t, const std::string& name,
                                             const arrow::DataType& type, const std::string& file) {
  auto col = t.GetColumnByName(name);
  if (!col || !col->type()->Equals(type))
    throw Error(file + ": column '" + name + "' missing or not " + type.ToString() + " (schema: " +
                t.schema()->ToString() + ")");
  if (col->num_chunks() == 0) return value_or_throw(arrow::MakeArrayOfNull(col->type(), 0), file);
  if (col->num_chunks() == 1) return col->chunk(0);
  return value_or_throw(arrow::Concatenate(col->chunks()), file + ": cannot read column " + name);
}

std::vector<std::string> string_column(const arrow::Table& t, const std::string& name, const std::string& file) {
  const auto& s = static_cast<const arrow::StringArray&>(*checked_column(t, name, *arrow::utf8(), file));
  std::vector<std::string> out(s.length());
  for (std::int64_t i = 0; i < s.length(); ++i) {
    if (s.IsNull(i)) throw Error(file + ": column '" + name + "' is null at row " + std::to_string(i));
    out[i] = s.GetString(i);
  }
  return out;
}

namespace {
// Converts one record batch of (path, label, name list<float>) into rows, checking every row.
void batch_to_rows(const std::shared_ptr<arrow::RecordBatch>& b, const std::string& name, const std::string& file, VectorRows& rows,
                   std::int64_t first_row) {
  const auto t = value_or_throw(arrow::Table::FromRecordBatches({b}), file);
  rows.paths = string_column(*t, "path", file);
  rows.labels = string_column(*t, "label", file);
  const auto lists_array = checked_column(*t, name, *arrow::list(arrow::float32()), file);
  const auto& lists = static_cast<const arrow::ListArray&>(*lists_array);
  const auto& flat = static_cast<const arrow::FloatArray&>(*lists.values());
  for (std::int64_t i = 0; i < lists.length(); ++i) {
    if (lists.IsNull(i))
      throw Error(file + ": row " + std::to_string(first_row + i) + " (" + rows.paths[i] + ") has a null '" + name +
                  "' instead of a vector");
    const int len = lists.value_length(i);
    if (rows.dim == 0) rows.dim = len;
    if (len != rows.dim)
      throw Error(file + ": row " + std::to_string(first_row + i) + " (" + rows.paths[i] + ") has " +
                  std::to_string(len) + " values in '" + name + "', expected " + std::to_string(rows.dim));
  }
  rows.values.resize(static_cast<std::size_t>(lists.length()) * rows.dim);
  for (std::int64_t i = 0; i < lists.length(); ++i) {
    const auto off = lists.value_offset(i);
    if (flat.null_count() > 0)
      for (int j = 0; j < rows.dim; ++j)
        if (flat.IsNull(off + j))
          throw Error(file + ": row " + std::to_string(first_row + i) + " (" + rows.paths[i] + ") has a null value");
    std::copy(flat.raw_values() + off, flat.raw_values() + off + rows.dim, rows.values.begin() + i * rows.dim);
  }
}
}  // namespace

void for_each_batch(const storage::Location& file, const std::string& name, int dim, std::int64_t batch_rows,
                    const std::function<void(const VectorRows&)>& f) {
  // Column chunks are decoded through a small buffer instead of whole (possibly 100s of MB) row
  // groups, so memory stays at one batch whatever the writer chose for its row-group size.
  parquet::ReaderProperties reader_props;
  reader_props.enable_buffered_stream();
  reader_props.set_buffer_size(1 << 20);
  parquet::arrow::FileReaderBuilder builder;
  check(builder.Open(open_for_parquet(file), reader_props), file.display() + ": not a readable Parquet file");
  parquet::ArrowReaderProperties props;
  props.set_batch_size(batch_rows);
  props.set_pre_buffer(false);
  builder.properties(props);
  auto reader = value_or_throw(builder.Build(), file.display() + ": not a readable Parquet file");
  auto batches = value_or_throw(reader->GetRecordBatchReader(), file.display() + ": cannot read Parquet");
  VectorRows rows;
  std::int64_t first_row = 0;
  while (true) {
    auto batch = value_or_throw(batches->Next(), file.display() + ": cannot read Parquet");
    if (!batch) break;
    rows.dim = dim > 0 ? dim : rows.dim;
    batch_to_rows(batch, name, file.display(), rows, first_row);
    first_row += batch->num_rows();
    f(rows);
  }
}

ErrorRows read_errors(const storage::Location& file) {
  auto t = read_table(file);
  return {string_column(*t, "path", file.display()), string_column(*t, "error", file.display())};
}

std::vector<int> part_shards(const storage::Location& folder) {
  std::vector<int> out;
  for (const auto& f : storage::list_dir(folder))
    if (auto shard = layout::parse_part(f.base_name()); f.IsFile() && shard) out.push_back(*shard);
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<storage::Location> list_parts(const storage::Location& folder) {
  std::vector<storage::Location> out;
  for (const auto& f : storage::list_dir(folder))
    if (f.IsFile() && layout::parse_part(f.base_name())) out.push_back(folder.at(f.path()));
  return out;
}

}  // namespace orchard::table
