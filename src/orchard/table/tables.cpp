#include "orchard/table/tables.hpp"

#include <parquet/arrow/reader.h>
#include <parquet/arrow/writer.h>

#include <cstdio>

#include "orchard/error.hpp"

namespace orchard::table {
using storage::check;
using storage::value_or_throw;

std::string part_name(int shard) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "part-%05d.parquet", shard);
  return buf;
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
std::shared_ptr<arrow::Array> strings(const std::vector<std::string>& v) {
  arrow::StringBuilder b;
  check(b.AppendValues(v), "building a string column");
  return value_or_throw(b.Finish(), "building a string column");
}
}  // namespace

void write_table(const storage::Location& file, const arrow::Table& table) {
  auto props = parquet::WriterProperties::Builder().compression(parquet::Compression::SNAPPY)->build();
  // store_schema keeps the schema's key-value metadata (the manifest's options).
  auto arrow_props = parquet::ArrowWriterProperties::Builder().store_schema()->build();
  storage::write_atomic(file, [&](const auto& out) {
    check(parquet::arrow::WriteTable(table, arrow::default_memory_pool(), out, 64 * 1024, props, arrow_props),
          file.path + ": cannot write Parquet");
  });
}

void write_vectors(const storage::Location& file, const VectorRows& rows, const std::string& column) {
  const auto n = static_cast<std::int64_t>(rows.size());
  if (static_cast<std::int64_t>(rows.values.size()) != n * rows.dim)
    throw Error(file.path + ": internal error, " + std::to_string(rows.values.size()) +
                " values for " + std::to_string(n) + " rows of " + std::to_string(rows.dim));
  arrow::FloatBuilder fb;
  check(fb.AppendValues(rows.values), "building vectors");
  auto values = value_or_throw(fb.Finish(), "building vectors");
  std::vector<std::int32_t> offsets(n + 1);
  for (std::int64_t i = 0; i <= n; ++i) offsets[i] = static_cast<std::int32_t>(i * rows.dim);
  arrow::Int32Builder ob;
  check(ob.AppendValues(offsets), "building vectors");
  auto offs = value_or_throw(ob.Finish(), "building vectors");
  auto lists = value_or_throw(arrow::ListArray::FromArrays(*offs, *values), "building vectors");
  auto table = arrow::Table::Make(vector_schema(column), {strings(rows.paths), strings(rows.labels), lists});
  write_table(file, *table);
}

void write_errors(const storage::Location& file, const ErrorRows& rows) {
  auto table = arrow::Table::Make(error_schema(), {strings(rows.paths), strings(rows.errors)});
  write_table(file, *table);
}

std::shared_ptr<arrow::Table> read_table(const storage::Location& file) {
  auto in = value_or_throw(file.fs->OpenInputFile(file.path), file.path + ": cannot open");
  auto reader = value_or_throw(parquet::arrow::OpenFile(in, arrow::default_memory_pool()),
                               file.path + ": not a readable Parquet file");
  std::shared_ptr<arrow::Table> table;
  check(reader->ReadTable(&table), file.path + ": cannot read Parquet");
  return value_or_throw(table->CombineChunks(), file.path + ": cannot read Parquet");
}

namespace {
std::shared_ptr<arrow::Array> column(const arrow::Table& t, const std::string& name,
                                     const arrow::DataType& type, const std::string& file) {
  auto col = t.GetColumnByName(name);
  if (!col || !col->type()->Equals(type))
    throw Error(file + ": column '" + name + "' missing or not " + type.ToString() + " (schema: " +
                t.schema()->ToString() + ")");
  if (col->num_chunks() == 0) return value_or_throw(arrow::MakeArrayOfNull(col->type(), 0), file);
  return col->chunk(0);
}

std::vector<std::string> to_strings(const std::shared_ptr<arrow::Array>& a, const std::string& what) {
  const auto& s = static_cast<const arrow::StringArray&>(*a);
  std::vector<std::string> out(s.length());
  for (std::int64_t i = 0; i < s.length(); ++i) {
    if (s.IsNull(i)) throw Error(what + ": null at row " + std::to_string(i));
    out[i] = s.GetString(i);
  }
  return out;
}
}  // namespace

VectorRows read_vectors(const storage::Location& file, const std::string& name, int dim) {
  auto t = read_table(file);
  VectorRows rows;
  rows.paths = to_strings(column(*t, "path", *arrow::utf8(), file.path), file.path + " path");
  rows.labels = to_strings(column(*t, "label", *arrow::utf8(), file.path), file.path + " label");
  const auto& lists = static_cast<const arrow::ListArray&>(
      *column(*t, name, *arrow::list(arrow::float32()), file.path));
  const auto& flat = static_cast<const arrow::FloatArray&>(*lists.values());
  rows.dim = dim;
  for (std::int64_t i = 0; i < lists.length(); ++i) {
    const int len = lists.IsNull(i) ? -1 : lists.value_length(i);
    if (i == 0 && rows.dim == 0) rows.dim = len;
    if (len != rows.dim)
      throw Error(file.path + ": row " + std::to_string(i) + " (" + rows.paths[i] + ") has " +
                  std::to_string(len) + " values in '" + name + "', expected " + std::to_string(rows.dim));
  }
  rows.values.resize(static_cast<std::size_t>(lists.length()) * rows.dim);
  for (std::int64_t i = 0; i < lists.length(); ++i) {
    const auto off = lists.value_offset(i);
    for (int j = 0; j < rows.dim; ++j) {
      if (flat.IsNull(off + j))
        throw Error(file.path + ": row " + std::to_string(i) + " (" + rows.paths[i] + ") has a null value");
      rows.values[i * rows.dim + j] = flat.Value(off + j);
    }
  }
  return rows;
}

ErrorRows read_errors(const storage::Location& file) {
  auto t = read_table(file);
  return {to_strings(column(*t, "path", *arrow::utf8(), file.path), file.path + " path"),
          to_strings(column(*t, "error", *arrow::utf8(), file.path), file.path + " error")};
}

std::vector<storage::Location> list_parts(const storage::Location& folder) {
  std::vector<storage::Location> out;
  if (!storage::exists(folder)) return out;
  arrow::fs::FileSelector sel;
  sel.base_dir = folder.path;
  auto infos = value_or_throw(folder.fs->GetFileInfo(sel), folder.path + ": cannot list");
  for (const auto& f : infos) {
    const auto& n = f.base_name();
    if (f.IsFile() && n.rfind("part-", 0) == 0 && n.size() > 8 && n.substr(n.size() - 8) == ".parquet")
      out.push_back({folder.fs, f.path()});
  }
  std::sort(out.begin(), out.end(), [](const auto& a, const auto& b) { return a.path < b.path; });
  return out;
}

}  // namespace orchard::table
