#pragma once
// The Parquet tables of OUTPUT (design.md "Output layout"): schemas, writers and readers.
#include <arrow/api.h>

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "orchard/storage/storage.hpp"

namespace orchard::table {

// Rows of path, label and a fixed-width float vector (features: 1280, pca: k).
struct VectorRows {
  int dim = 0;
  std::vector<std::string> paths, labels;
  std::vector<float> values;  // rows x dim, row-major
  std::size_t size() const { return paths.size(); }
};

// Inputs that gave no embedding.
struct ErrorRows {
  std::vector<std::string> paths, errors;
};

// Predictions of a classify shard: each image's best classes, best first.
struct PredictionRows {
  std::vector<std::string> paths, labels;
  std::vector<std::vector<std::string>> top_labels;
  std::vector<std::vector<float>> top_probabilities;
  std::size_t size() const { return paths.size(); }
};

// Why an embedding must not be written (non-finite or all-zero), or "" when it is sound.
std::string vector_problem(const float* v, int dim);

// Schema path: string, label: string, <column>: list<float>.
std::shared_ptr<arrow::Schema> vector_schema(const std::string& column);
std::shared_ptr<arrow::Schema> error_schema();

// Writes rows as one snappy Parquet file, atomically. column is "features" or "pca".
void write_vectors(const storage::Location& file, const VectorRows& rows, const std::string& column);

// Receives one batch of rows to append to the file being written.
using EmitFn = std::function<void(const VectorRows&)>;
// Writes one Parquet file atomically from the batches that produce() emits, one at a time, so
// memory holds a single batch whatever the file's size.
void write_vectors_streamed(const storage::Location& file, const std::string& column,
                            const std::function<void(const EmitFn& emit)>& produce);
// Writes predictions (path, label, top_labels: list<string>, top_probabilities: list<float>) as one
// snappy Parquet file, atomically.
void write_predictions(const storage::Location& file, const PredictionRows& rows);
// Writes error rows (path, error) as one snappy Parquet file, atomically.
void write_errors(const storage::Location& file, const ErrorRows& rows);
// Writes any Arrow table as one snappy Parquet file, atomically.
void write_table(const storage::Location& file, const arrow::Table& table);

// Reads a whole Parquet file. Throws orchard::Error naming the file.
std::shared_ptr<arrow::Table> read_table(const storage::Location& file);

// Reads a vector table (path, label, column list<float>) in consecutive batches of at most
// batch_rows rows, calling f for each (memory: one batch). Checks every row has `dim` values (the
// first row's count when dim is 0) and no nulls; throws orchard::Error naming the file and row.
void for_each_batch(const storage::Location& file, const std::string& column, int dim,
                    std::int64_t batch_rows, const std::function<void(const VectorRows&)>& f);

// Reads an errors part. Throws orchard::Error naming the file.
ErrorRows read_errors(const storage::Location& file);

// The values of a non-null string column of t. Throws orchard::Error naming file when the column
// is missing, not a string, or has nulls.
std::vector<std::string> string_column(const arrow::Table& t, const std::string& name, const std::string& file);

// A column of t as one array, checked to exist with the given type. Throws orchard::Error naming file.
std::shared_ptr<arrow::Array> checked_column(const arrow::Table& t, const std::string& name,
                                             const arrow::DataType& type, const std::string& file);

// Sorted part files (part-NNNNN.parquet) in folder; empty when the folder is missing. A listing
// that fails throws kStorage.
std::vector<storage::Location> list_parts(const storage::Location& folder);

// The shard numbers of the part files in folder, sorted (one listing; empty when it is missing).
std::vector<int> part_shards(const storage::Location& folder);

}  // namespace orchard::table
