#pragma once
// The AWS region of a bucket when the environment names none, found the way the AWS CLI, boto3
// and Arrow find it: the store's answer to HeadBucket (its x-amz-bucket-region header), then, on
// EC2, the instance metadata service (IMDSv2). Plain HTTP on sockets; no credentials needed.
#include <optional>
#include <string>

namespace orchard::storage::region {

// The region the store reports for bucket: a HEAD of http(s)://ENDPOINT/bucket (endpoint as in
// AWS_ENDPOINT_URL_S3, e.g. "http://127.0.0.1:8333"), or, with no endpoint, Arrow's resolver
// against AWS. A custom store that answers without the header has no location constraint:
// "us-east-1", as the AWS CLI and boto3 assume. Nothing when the store cannot be asked
// (unreachable, an https endpoint) or AWS does not say.
std::optional<std::string> from_store(const std::string& bucket, const std::string& endpoint);

// The instance's region from EC2's metadata service (AWS_EC2_METADATA_SERVICE_ENDPOINT, default
// http://169.254.169.254), one second at most; nothing off EC2 or when AWS_EC2_METADATA_DISABLED=true.
std::optional<std::string> from_instance_metadata();

}  // namespace orchard::storage::region
