#include "orchard/dataset/manifest.hpp"

#include <arrow/api.h>

#include <algorithm>
#include <cctype>
#include <charconv>

#include "orchard/error.hpp"
#include "orchard/storage/layout.hpp"
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
  auto files = storage::list_files(input, options.glob);
  if (options.limit > 0 && static_cast<std::int64_t>(files.size()) > options.limit) files.resize(options.limit);
  std::vector<Item> items;
  items.reserve(files.size());
  for (auto& f : files) items.push_back({f.name, label_of(f.name), f.size});
  return items;
}

namespace {
std::shared_ptr<arrow::KeyValueMetadata> to_metadata(const PlanOptions& o) {
  return arrow::key_value_metadata({"input", "glob", "limit", "shard_size", "model"},
                                   {o.input, o.glob, std::to_string(o.limit), std::to_string(o.shard_size), o.model});
}

void write_manifest(const storage::Location& file, const Manifest& m) {
  arrow::StringBuilder paths, labels;
  arrow::Int64Builder sizes;
  for (const auto& it : m.items) {
    check(paths.Append(it.path), "manifest");
    check(labels.Append(it.label), "manifest");
    check(sizes.Append(it.size), "manifest");
  }
  auto schema = arrow::schema({arrow::field("path", arrow::utf8(), false),
                               arrow::field("label", arrow::utf8(), false),
                               arrow::field("size", arrow::int64(), false)},
                              to_metadata(m.options));
  auto t = arrow::Table::Make(schema, {value_or_throw(paths.Finish(), "manifest"),
                                       value_or_throw(labels.Finish(), "manifest"),
                                       value_or_throw(sizes.Finish(), "manifest")});
  table::write_table(file, *t);
}

}  // namespace

Manifest load_manifest(const storage::Location& output) {
  const auto file = layout::manifest(output);
  std::shared_ptr<arrow::Table> t;
  try {
    t = table::read_table(file);
  } catch (const Error& e) {
    if (!e.is_not_found()) throw;
    throw Error(file.display() + " is missing: OUTPUT was not planned yet (run `orchard featurize` or `orchard plan`)");
  }
  auto meta = t->schema()->metadata();
  if (!meta) throw Error(file.display() + ": manifest without its options; delete OUTPUT and run again");
  auto get = [&](const std::string& k) { return value_or_throw(meta->Get(k), file.display() + ": manifest lacks " + k); };
  Manifest m;
  try {
    m.options = {get("input"), get("glob"), std::stoll(get("limit")), std::stoi(get("shard_size"))};
  } catch (const std::logic_error&) {
    throw Error(file.display() + ": manifest options are not numbers; delete OUTPUT and run again");
  }
  if (auto model = meta->Get("model"); model.ok()) m.options.model = *model;  // older manifests have none
  if (m.options.shard_size < 1) throw Error(file.display() + ": shard_size < 1; delete OUTPUT and run again");
  auto paths = table::string_column(*t, "path", file.display());
  auto labels = table::string_column(*t, "label", file.display());
  std::vector<std::int64_t> sizes(paths.size(), -1);
  if (t->GetColumnByName("size")) {
    const auto col = table::checked_column(*t, "size", *arrow::int64(), file.display());
    const auto& a = static_cast<const arrow::Int64Array&>(*col);
    for (std::size_t i = 0; i < sizes.size(); ++i) sizes[i] = a.IsNull(i) ? -1 : a.Value(i);
  }
  m.items.reserve(paths.size());
  for (std::size_t i = 0; i < paths.size(); ++i) m.items.push_back({std::move(paths[i]), std::move(labels[i]), sizes[i]});
  return m;
}

Manifest plan(const storage::Location& input, const storage::Location& output, const PlanOptions& options) {
  const auto file = layout::manifest(output);
  if (storage::exists(file)) {  // a failed check throws: never re-plan over an existing manifest
    Manifest m = load_manifest(output);
    const auto& o = m.options;
    if (o.input != options.input)
      throw Error(output.display() + " holds a run over INPUT " + o.input + ", not " + options.input +
                  "; rerun with that INPUT to resume, or choose a new OUTPUT");
    if (o.glob != options.glob || o.limit != options.limit || o.shard_size != options.shard_size)
      throw Error(output.display() + " holds a run started with --glob '" + o.glob + "' --limit " +
                  std::to_string(o.limit) + " --shard-size " + std::to_string(o.shard_size) +
                  "; rerun with the same options to resume, or choose a new OUTPUT");
    check_model(m, options.model, output);
    return m;
  }
  Manifest m{options, list_items(input, options)};
  if (m.items.empty())
    throw Error(input.display() + ": no file matches --glob '" + options.glob +
                "' (searched recursively); check INPUT and --glob");
  storage::make_dirs(output);
  write_manifest(file, m);
  return m;
}

void check_model(const Manifest& m, const std::string& fingerprint, const storage::Location& output) {
  if (m.options.model.empty() || fingerprint.empty() || m.options.model == fingerprint) return;
  throw Error(output.display() + " holds embeddings of another model (fingerprint " + m.options.model +
              ", this --model has " + fingerprint + "); resume with the model it was started with, or choose a new "
              "OUTPUT for this one");
}

std::vector<int> parse_shard_list(const std::string& list, int num_shards) {
  std::vector<int> out;
  std::size_t pos = 0;
  while (pos <= list.size()) {
    const auto comma = std::min(list.find(',', pos), list.size());
    const std::string item = list.substr(pos, comma - pos);
    pos = comma + 1;
    if (item.empty()) continue;
    // A whole number, or two joined by one '-': "7" or "5-7" (not "3x", "1-3-5", "-2" or " 4").
    auto number = [&](const std::string& text) {
      int v = -1;
      const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), v);
      if (text.empty() || !std::isdigit(static_cast<unsigned char>(text[0])) || ec != std::errc() ||
          end != text.data() + text.size())
        throw Error("shard list: '" + item + "' is not a shard number or range such as 5-7");
      return v;
    };
    const auto dash = item.find('-');
    const int first = number(item.substr(0, dash));
    const int last = dash == std::string::npos ? first : number(item.substr(dash + 1));
    if (first < 0 || last < first || last >= num_shards)
      throw Error("shard list: '" + item + "' is outside 0-" + std::to_string(num_shards - 1) + " (the manifest has " +
                  std::to_string(num_shards) + " shards)");
    for (int s = first; s <= last; ++s) out.push_back(s);
  }
  std::sort(out.begin(), out.end());
  out.erase(std::unique(out.begin(), out.end()), out.end());
  return out;
}

}  // namespace orchard::dataset
