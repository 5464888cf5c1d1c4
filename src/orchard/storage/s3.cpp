#include "orchard/storage/s3.hpp"

#include <arrow/filesystem/s3fs.h>

#include <cctype>
#include <cstdlib>
#include <fstream>
#include <map>
#include <mutex>
#include <optional>
#include <vector>

#include "orchard/error.hpp"
#include "orchard/storage/region.hpp"
#include "orchard/storage/storage.hpp"

namespace orchard::storage::s3 {
namespace {

std::mutex mu;
std::map<std::pair<std::string, std::string>, std::shared_ptr<arrow::fs::FileSystem>> filesystems;  // by key, region
std::map<std::string, std::string> bucket_regions;  // found (not configured) regions, by bucket
std::mutex secrets_mu;  // its own: scrub() asks for the secrets while mu may be held (an error in filesystem())
std::vector<std::string> secrets;
bool initialised = false;

std::string env(const char* name) {
  const char* v = std::getenv(name);
  return v ? v : "";
}

std::string trim(const std::string& s) {
  const auto b = s.find_first_not_of(" \t\r");
  const auto e = s.find_last_not_of(" \t\r");
  return b == std::string::npos ? "" : s.substr(b, e - b + 1);
}

std::string percent_decode(const std::string& s) {
  std::string out;
  for (std::size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '%' && i + 2 < s.size() && std::isxdigit(static_cast<unsigned char>(s[i + 1])) &&
        std::isxdigit(static_cast<unsigned char>(s[i + 2]))) {
      out += static_cast<char>(std::stoi(s.substr(i + 1, 2), nullptr, 16));
      i += 2;
    } else {
      out += s[i];
    }
  }
  return out;
}

// region = ... in the profile's section of the AWS config file, or "".
std::string profile_region() {
  std::string file = env("AWS_CONFIG_FILE");
  if (file.empty() && !env("HOME").empty()) file = env("HOME") + "/.aws/config";
  std::ifstream in(file);
  if (!in) return "";
  const std::string profile = env("AWS_PROFILE").empty() ? "default" : env("AWS_PROFILE");
  const std::string want1 = "[" + profile + "]", want2 = "[profile " + profile + "]";
  bool in_section = false;
  for (std::string line; std::getline(in, line);) {
    line = trim(line);
    if (line.empty() || line[0] == '#' || line[0] == ';') continue;
    if (line[0] == '[') { in_section = line == want1 || line == want2; continue; }
    const auto eq = line.find('=');
    if (in_section && eq != std::string::npos && trim(line.substr(0, eq)) == "region") return trim(line.substr(eq + 1));
  }
  return "";
}

// The region set in the environment: AWS_REGION, AWS_DEFAULT_REGION, the profile's; or "".
std::string configured_region() {
  for (const char* v : {"AWS_REGION", "AWS_DEFAULT_REGION"})
    if (!env(v).empty()) return env(v);
  return profile_region();
}

std::string endpoint_url() {
  std::string endpoint = env("AWS_ENDPOINT_URL_S3");
  if (endpoint.empty()) endpoint = env("AWS_ENDPOINT_URL");
  if (!endpoint.empty() && endpoint.find("://") == std::string::npos)
    throw Error("AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL = '" + endpoint +
                "' has no scheme; write it as http://HOST:PORT or https://HOST");
  return endpoint;
}

// The region to sign for: an explicit setting always wins; else the bucket's region as the store
// reports it (HeadBucket's x-amz-bucket-region), else the EC2 instance's. Called under mu.
std::string region_for(const std::string& bucket, const std::string& endpoint) {
  if (auto r = configured_region(); !r.empty()) return r;
  if (auto it = bucket_regions.find(bucket); it != bucket_regions.end()) return it->second;
  auto found = region::from_store(bucket, endpoint);
  if (!found) found = region::from_instance_metadata();
  if (!found)
    throw Error("s3://" + bucket + ": no AWS region configured, and neither the store nor EC2 instance metadata "
                "told it; set AWS_REGION (e.g. eu-west-3, the bucket's region) or `region` in ~/.aws/config for "
                "your AWS_PROFILE");
  return bucket_regions[bucket] = *found;
}

}  // namespace

Uri parse(const std::string& uri) {
  const std::string prefix = "s3://";
  if (uri.rfind(prefix, 0) != 0) throw Error(redact(uri) + ": not an s3:// URI");
  std::string rest = uri.substr(prefix.size());
  // The keys end where redact() says they do (a secret may hold a raw '/', as AWS secrets do).
  std::optional<std::string> userinfo;
  if (const std::string r = redact(uri); r.rfind(prefix + "***@", 0) == 0) {
    const std::string after = r.substr(prefix.size() + 4);
    userinfo = rest.substr(0, rest.size() - after.size() - 1);
    rest = after;
  }
  const auto slash = rest.find('/');
  std::string authority = rest.substr(0, slash);
  std::string key = slash == std::string::npos ? "" : rest.substr(slash + 1);
  Uri u;
  if (userinfo) {
    const auto colon = userinfo->find(':');
    if (colon == std::string::npos)
      throw Error(redact(uri) + ": keys in an s3:// URI are KEY:SECRET@bucket; better, leave them out and use "
                  "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY or AWS_PROFILE");
    u.access_key = percent_decode(userinfo->substr(0, colon));
    u.secret_key = percent_decode(userinfo->substr(colon + 1));
  }
  while (!key.empty() && key.back() == '/') key.pop_back();
  while (!key.empty() && key.front() == '/') key.erase(key.begin());
  if (authority.empty()) throw Error(redact(uri) + ": no bucket; an S3 location is s3://BUCKET/PREFIX");
  u.bucket = authority;
  u.key = key;
  if (!u.secret_key.empty()) {
    std::lock_guard lock(secrets_mu);
    secrets.push_back(u.secret_key);
  }
  return u;
}

std::shared_ptr<arrow::fs::FileSystem> filesystem(const Uri& uri) {
  std::lock_guard lock(mu);
  if (!initialised) {  // the AWS SDK must be up before any S3Options is made
    check(arrow::fs::EnsureS3Initialized(), "initialising S3");
    initialised = true;
  }
  const std::string endpoint = endpoint_url();
  const std::string region = region_for(uri.bucket, endpoint);
  auto& fs = filesystems[{uri.access_key, region}];
  if (fs) return fs;
  arrow::fs::S3Options o = uri.access_key.empty() ? arrow::fs::S3Options::Defaults()
                                                  : arrow::fs::S3Options::FromAccessKey(uri.access_key, uri.secret_key);
  o.region = region;
  if (!endpoint.empty()) {
    const auto sep = endpoint.find("://");
    o.scheme = endpoint.substr(0, sep);
    o.endpoint_override = endpoint.substr(sep + 3);
    while (!o.endpoint_override.empty() && o.endpoint_override.back() == '/') o.endpoint_override.pop_back();
  }
  // Small parts go out as one PutObject instead of create + upload + complete.
  o.allow_delayed_open = true;
  // The SDK retries throttling, 5xx and broken connections itself; storage::with_retries adds
  // a few longer, bounded rounds on top.
  o.retry_strategy = arrow::fs::S3RetryStrategy::GetAwsStandardRetryStrategy(3);
  o.connect_timeout = 5;
  o.request_timeout = 30;
  fs = value_or_throw(arrow::fs::S3FileSystem::Make(o), "s3://" + uri.bucket + ": cannot configure S3");
  return fs;
}

std::vector<std::string> uri_secrets() {
  std::lock_guard lock(secrets_mu);
  return secrets;
}

void finalize() {
  std::lock_guard lock(mu);
  filesystems.clear();
  bucket_regions.clear();
  if (initialised) (void)arrow::fs::EnsureS3Finalized();
  initialised = false;
}

}  // namespace orchard::storage::s3
