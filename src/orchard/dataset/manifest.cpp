#include "orchard/dataset/manifest.hpp"

#include <arrow/api.h>

#include "orchard/error.hpp"
#include "orchard/table/tables.hpp"

namespace orchard::dataset {
using storage::check;
using storage::value_or_throw;

int Manifest::num_shards() const {
  return static_cast<int>((items.size() + options.shard_size - 1) / options.shard_size);
}

std::pair<std::size_t, std::size_t> Manifest::shard_range(int s) const {
  const std::size_t begin = static_cast<std::size_t>(s) * options.shard_size;
  return {begin, std::min(items.size(), begin + options.shard_size)};
}

std::string label_of(const std::string& path) {
  const auto slash = path.rfind('/');
  if (slash == std::string::npos || slash == 0) return "";
  const auto prev = path.rfind('/', slash - 1);
  return path.substr(prev == std::string::npos ? 0 : prev + 1, slash - (prev == std::string::npos ? 0 : prev + 1));
}

std::vector<Item> list_items(const storage::Location& input, const PlanOptions& options) {
  auto paths = storage::list_files(input, options.glob);
  if (options.limit > 0 && static_cast<std::int64_t>(paths.size()) > options.limit) paths.resize(options.limit);
  std::vector<Item> items;
  items.reserve(paths.size());
  for (auto& p : paths) items.push_back({p, label_of(p)});
  return items;
}

namespace {
const char* kManifest = "_manifest.parquet";

std::shared_ptr<arrow::KeyValueMetadata> to_metadata(const PlanOptions& o) {
  return arrow::key_value_metadata({"input", "glob", "limit", "shard_size"},
                                   {o.input, o.glob, std::to_string(o.limit), std::to_string(o.shard_size)});
}

void write_manifest(const storage::Location& file, const Manifest& m) {
  arrow::StringBuilder paths, labels;
  for (const auto& it : m.items) {
    check(paths.Append(it.path), "manifest");
    check(labels.Append(it.label), "manifest");
  }
  auto schema = arrow::schema({arrow::field("path", arrow::utf8(), false),
                               arrow::field("label", arrow::utf8(), false)},
                              to_metadata(m.options));
  auto t = arrow::Table::Make(schema, {value_or_throw(paths.Finish(), "manifest"),
                                       value_or_throw(labels.Finish(), "manifest")});
  table::write_table(file, *t);
}

}  // namespace

Manifest load_manifest(const storage::Location& output) {
  const auto file = output.child(kManifest);
  if (!storage::exists(file))
    throw Error(file.path + " is missing: OUTPUT was not made by `orchard featurize`");
  auto t = table::read_table(file);
  auto meta = t->schema()->metadata();
  if (!meta) throw Error(file.path + ": manifest without its options; delete OUTPUT and run again");
  auto get = [&](const std::string& k) { return value_or_throw(meta->Get(k), file.path + ": manifest lacks " + k); };
  Manifest m;
  try {
    m.options = {get("input"), get("glob"), std::stoll(get("limit")), std::stoi(get("shard_size"))};
  } catch (const std::logic_error&) {
    throw Error(file.path + ": manifest options are not numbers; delete OUTPUT and run again");
  }
  auto paths = table::string_column(*t, "path", file.path);
  auto labels = table::string_column(*t, "label", file.path);
  m.items.reserve(paths.size());
  for (std::size_t i = 0; i < paths.size(); ++i) m.items.push_back({std::move(paths[i]), std::move(labels[i])});
  return m;
}

Manifest plan(const storage::Location& input, const storage::Location& output, const PlanOptions& options) {
  const auto file = output.child(kManifest);
  if (storage::exists(file)) {
    Manifest m = load_manifest(output);
    const auto& o = m.options;
    if (o.input != options.input)
      throw Error(output.path + " holds a run over INPUT " + o.input + ", not " + options.input +
                  "; rerun with that INPUT to resume, or choose a new OUTPUT");
    if (o.glob != options.glob || o.limit != options.limit || o.shard_size != options.shard_size)
      throw Error(output.path + " holds a run started with --glob '" + o.glob + "' --limit " +
                  std::to_string(o.limit) + " --shard-size " + std::to_string(o.shard_size) +
                  "; rerun with the same options to resume, or choose a new OUTPUT");
    return m;
  }
  Manifest m{options, list_items(input, options)};
  if (m.items.empty())
    throw Error(input.path + ": no file matches --glob '" + options.glob +
                "' (searched recursively); check INPUT and --glob");
  storage::make_dirs(output);
  write_manifest(file, m);
  return m;
}

}  // namespace orchard::dataset
