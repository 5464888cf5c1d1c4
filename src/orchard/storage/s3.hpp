#pragma once
// S3 the AWS way: an s3:// URI parsed, the region and endpoint taken from the AWS environment,
// one S3FileSystem per set of credentials, S3 initialised once per process and finalised at exit.
#include <arrow/filesystem/filesystem.h>

#include <memory>
#include <string>

namespace orchard::storage::s3 {

// The parts of s3://[KEY:SECRET@]bucket[/key].
struct Uri {
  std::string access_key, secret_key;  // empty unless the URI carries them
  std::string bucket, key;             // key without leading or trailing '/'
  std::string path() const { return key.empty() ? bucket : bucket + "/" + key; }
};

// Parses an s3:// URI. Throws orchard::Error (keys redacted) when it is not one.
Uri parse(const std::string& uri);

// The S3 filesystem for these credentials (the default chain when the URI has none) and the
// bucket's region: AWS_REGION, AWS_DEFAULT_REGION or the profile in ~/.aws/config (AWS_PROFILE,
// AWS_CONFIG_FILE) when set, else the region the store reports for the bucket, else the EC2
// instance's (storage/region.hpp); endpoint from AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL.
// Throws orchard::Error saying what to set when no region can be found.
std::shared_ptr<arrow::fs::FileSystem> filesystem(const Uri& uri);

// Secrets given in URIs so far (for scrub()).
std::vector<std::string> uri_secrets();

// FinalizeS3 when S3 was initialised.
void finalize();

}  // namespace orchard::storage::s3
