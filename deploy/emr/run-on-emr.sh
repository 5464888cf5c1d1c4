#!/usr/bin/env bash
# Runs Orchard's Spark application on a new Amazon EMR 7.x cluster in an EU region, from a laptop
# with the AWS CLI: bundle -> upload to S3 -> create-cluster with the spark-submit step -> wait.
# `run-on-emr.sh --help` explains everything; docs/deploy.md is the longer guide.
set -euo pipefail

PROG=run-on-emr
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

usage() {
  cat <<'EOF'
Usage: deploy/emr/run-on-emr.sh INPUT OUTPUT [options]

Runs `spark/orchard_spark.py run INPUT OUTPUT` on a new Amazon EMR 7.x cluster in an EU region:

  1. builds the self-contained worker archive with tools/bundle.sh (or takes --bundle FILE);
  2. uploads it and spark/orchard_spark.py to S3 under --code-uri (`aws s3 cp`);
  3. creates the cluster (`aws emr create-cluster`) with Spark, one step
       spark-submit --deploy-mode cluster --archives s3://.../orchard-*.tar.gz#orchard \
                    s3://.../orchard_spark.py run INPUT OUTPUT [your options]
     dynamic allocation off, spark.task.maxFailures raised, logs in --log-uri, tags,
     and an idle auto-termination policy; by default the cluster also ends when the step ends;
  4. waits for the step (polls `aws emr describe-step`) and prints where results and logs are.

INPUT and OUTPUT are s3://bucket/prefix URIs (a laptop path is not visible from the cluster:
`aws s3 sync` it first). Rerunning with the same OUTPUT resumes: finished shards are skipped and
OUTPUT/_SUCCESS is written last.

Application options (passed through to orchard_spark.py run):
  --model M             s3:// URI of a prepared .ov or of the Keras .h5 file; a local .ov/.h5
                        file is uploaded under --code-uri first; ./orchard/... names a file in
                        the bundle. Omit when the bundle carries a prepared model.
  --glob G              file name pattern (orchard's default: *.jpg)
  --shard-size N        images per shard (the unit of work, retry and resume)
  --variance F | --k K  PCA: fewest components explaining F of the variance, or exactly K

Where things go:
  --bundle FILE         use this dist/orchard-VERSION-linux-x86_64.tar.gz instead of building one
  --bundle-model W      build the bundle with this model inside (tools/bundle.sh --model W)
  --app FILE            the Spark application (default: spark/orchard_spark.py of this checkout)
  --code-uri S3URI      where the bundle, app and model are uploaded
                        (default: s3://OUTPUT_BUCKET/orchard-code/RUN_ID/)
  --log-uri S3URI       EMR logs (default: s3://OUTPUT_BUCKET/orchard-logs/)
  --run-id ID           names the run (default: orchard-UTCDATE-UTCTIME)

Cluster:
  --region R            AWS region of the cluster and of every aws call (default: eu-west-3,
                        Paris). EU regions only, unless --allow-non-eu: the photos are personal
                        data (docs/deploy.md). Orchard finds each bucket's region by itself; when
                        --region is given, it is also passed to the driver and executors as
                        AWS_REGION.
  --release LABEL       EMR release, emr-7.x (default: emr-7.12.0; EMR 7 runs Amazon Linux 2023,
                        which the bundle targets)
  --name NAME           cluster name (default: "orchard RUN_ID")
  --master-type T       primary node instance type (default: m6i.xlarge)
  --core-type T         core (worker) node instance type (default: c6i.4xlarge)
  --core-count N        number of core nodes (default: 2)
  --executor-cores N    cores per Spark executor (default: 4)
  --executors N         executor count (default: core-count x vCPUs(core-type) / executor-cores - 1,
                        the 1 leaving room for the driver, which runs on a core node)
  --executor-memory M   JVM heap per executor (default: 3g)
  --executor-overhead M off-heap memory per executor, where the Python worker and the native
                        orchard process live (default: 3g)
  --max-task-failures N spark.task.maxFailures (default: 8)
  --python PATH         Python for the driver and executors (default: the node's python3,
                        3.9 on EMR 7; the application needs Python 3.9+ and pyspark only)
  --conf K=V            extra spark-submit --conf (repeatable)
  --tag K=V             extra cluster tag (repeatable; project=orchard and run-id are always set)
  --idle-timeout SECS   auto-termination after SECS idle (default: 1800; EMR allows 60..604800)
  --keep-cluster        keep the cluster when the step ends (to look at it or add steps); it
                        still ends after --idle-timeout idle seconds
  --service-role ROLE   EMR service role (default: EMR_DefaultRole)
  --instance-profile P  EC2 instance profile of the nodes (default: EMR_EC2_DefaultRole; see
                        docs/deploy.md for a least-privilege one)
  --subnet ID           EC2 subnet (default: the region's default VPC)
  --key-name NAME       EC2 key pair, for SSH to the primary node

Running:
  --no-wait             return after creating the cluster
  --poll SECS           seconds between step status checks (default: 30)
  --max-wait SECS       give up waiting after SECS (the cluster keeps running; default: no limit)
  --dry-run             print every AWS CLI call, one shell-quoted line each, and make none
                        (without --bundle, tools/bundle.sh is not run: a placeholder name is used)
  --endpoint-url URL    passed to every aws call (default: $AWS_ENDPOINT_URL); for tests
  -h, --help            this text

AWS configuration is the CLI's own: credentials from the default chain (env, ~/.aws, SSO, role),
never printed. One-time setup: `aws emr create-default-roles --region eu-west-3`.

Exit status: 0 step completed (or submitted, with --no-wait; or printed, with --dry-run);
1 bad arguments or a failed aws call (one line names the call and what to check);
2 the step failed or was cancelled; 3 --max-wait passed while the step was still going.

Example:
  deploy/emr/run-on-emr.sh s3://my-fruits/Test s3://my-fruits/out/test-run \
      --model s3://my-fruits/models/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5 \
      --core-count 4 --tag owner=alice
EOF
}

# --- output and errors: progress on stderr, results and --dry-run calls on stdout ---------------

info() { printf '%s: %s\n' "$PROG" "$*" >&2; }

# progress MESSAGE: info, except in --dry-run (where nothing happens).
progress() { (( DRY_RUN )) || info "$@"; }

# die [--code N] MESSAGE: one line on stderr, then exit N (default 1).
die() {
  local code=1
  if [[ ${1:-} == --code ]]; then code=$2; shift 2; fi
  printf '%s: error: %s\n' "$PROG" "$*" >&2
  exit "$code"
}

# shell_line WORD...: the words as one shell line, each quoted only when it needs it.
shell_line() {
  local out="" w
  for w in "$@"; do
    if [[ $w =~ ^[A-Za-z0-9_./:=@%+,-]+$ ]]; then
      out+="$w "
    else
      out+="'${w//\'/\'\\\'\'}' "
    fi
  done
  printf '%s\n' "${out% }"
}

# json_str S / json_list WORD...: JSON string / array of strings.
json_str() {
  local s=$1
  s=${s//\\/\\\\}; s=${s//\"/\\\"}; s=${s//$'\n'/\\n}; s=${s//$'\r'/\\r}; s=${s//$'\t'/\\t}
  printf '"%s"' "$s"
}
json_list() {
  local out="" w
  for w in "$@"; do out+="$(json_str "$w"),"; done
  printf '[%s]' "${out%,}"
}

# --- aws: one way to call it ----------------------------------------------------------------------

AWS_GLOBAL=()  # --region R [--endpoint-url U], appended to every call

# aws_run HINT ARGS...: runs `aws ARGS` (stdout to the caller); in --dry-run prints it instead.
# On failure: one line naming the call, the CLI's last error line and HINT (what to check); exit 1.
aws_run() {
  local hint=$1; shift
  local cmd=(aws "$@" "${AWS_GLOBAL[@]}")
  if (( DRY_RUN )); then
    shell_line "${cmd[@]}" >&3  # the script's stdout, even when the caller captures ours
    return 0
  fi
  local err rc=0
  err=$(mktemp)
  "${cmd[@]}" 2>"$err" || rc=$?
  if (( rc != 0 )); then
    local msg
    msg=$(grep -v '^[[:space:]]*$' "$err" | tail -n 1 | cut -c1-400 || true)
    rm -f "$err"
    die "\`aws $1 $2\` failed (exit $rc): ${msg:-no message from the AWS CLI}. Check: $hint"
  fi
  rm -f "$err"
}

# --- arguments -------------------------------------------------------------------------------------

INPUT="" OUTPUT=""
BUNDLE="" BUNDLE_MODEL="" APP="$REPO/spark/orchard_spark.py" CODE_URI="" LOG_URI="" RUN_ID=""
REGION=eu-west-3 REGION_GIVEN=0 RELEASE=emr-7.12.0 NAME="" ALLOW_NON_EU=0
MASTER_TYPE=m6i.xlarge CORE_TYPE=c6i.4xlarge CORE_COUNT=2
EXECUTOR_CORES=4 EXECUTORS="" EXECUTOR_MEMORY=3g EXECUTOR_OVERHEAD=3g MAX_TASK_FAILURES=8
PYTHON="" IDLE_TIMEOUT=1800 KEEP_CLUSTER=0
SERVICE_ROLE=EMR_DefaultRole INSTANCE_PROFILE=EMR_EC2_DefaultRole SUBNET="" KEY_NAME=""
WAIT=1 POLL=30 MAX_WAIT=0 DRY_RUN=0 ENDPOINT_URL=${AWS_ENDPOINT_URL:-}
MODEL="" GLOB="" SHARD_SIZE="" VARIANCE="" K=""
CONFS=() TAGS=()

# need_value OPTION "$#": the option must be followed by a value.
need_value() { (( $2 >= 2 )) || die "$1 needs a value (see --help)"; }

parse_args() {
  local positional=()
  while (( $# )); do
    case $1 in
      -h|--help) usage; exit 0 ;;
      --dry-run) DRY_RUN=1 ;;
      --no-wait) WAIT=0 ;;
      --keep-cluster) KEEP_CLUSTER=1 ;;
      --allow-non-eu) ALLOW_NON_EU=1 ;;
      --model|--glob|--shard-size|--variance|--k|--bundle|--bundle-model|--app|--code-uri|--log-uri|--run-id|\
      --region|--release|--name|--master-type|--core-type|--core-count|--executor-cores|\
      --executors|--executor-memory|--executor-overhead|--max-task-failures|--python|--conf|\
      --tag|--idle-timeout|--service-role|--instance-profile|--subnet|--key-name|--poll|\
      --max-wait|--endpoint-url)
        need_value "$1" $#
        set_option "$1" "$2"
        shift ;;
      --*=*) set -- "${1%%=*}" "${1#*=}" "${@:2}"; continue ;;
      -*) die "unknown option $1 (see --help)" ;;
      *) positional+=("$1") ;;
    esac
    shift
  done
  (( ${#positional[@]} == 2 )) || die "expected INPUT and OUTPUT, got ${#positional[@]} arguments (see --help)"
  INPUT=${positional[0]} OUTPUT=${positional[1]}
}

# set_option OPTION VALUE
set_option() {
  case $1 in
    --model) MODEL=$2 ;; --glob) GLOB=$2 ;; --shard-size) SHARD_SIZE=$2 ;;
    --variance) VARIANCE=$2 ;; --k) K=$2 ;;
    --bundle) BUNDLE=$2 ;; --bundle-model) BUNDLE_MODEL=$2 ;; --app) APP=$2 ;;
    --code-uri) CODE_URI=$2 ;; --log-uri) LOG_URI=$2 ;;
    --run-id) RUN_ID=$2 ;; --region) REGION=$2 REGION_GIVEN=1 ;; --release) RELEASE=$2 ;; --name) NAME=$2 ;;
    --master-type) MASTER_TYPE=$2 ;; --core-type) CORE_TYPE=$2 ;; --core-count) CORE_COUNT=$2 ;;
    --executor-cores) EXECUTOR_CORES=$2 ;; --executors) EXECUTORS=$2 ;;
    --executor-memory) EXECUTOR_MEMORY=$2 ;; --executor-overhead) EXECUTOR_OVERHEAD=$2 ;;
    --max-task-failures) MAX_TASK_FAILURES=$2 ;; --python) PYTHON=$2 ;;
    --conf) CONFS+=("$2") ;; --tag) TAGS+=("$2") ;; --idle-timeout) IDLE_TIMEOUT=$2 ;;
    --service-role) SERVICE_ROLE=$2 ;; --instance-profile) INSTANCE_PROFILE=$2 ;;
    --subnet) SUBNET=$2 ;; --key-name) KEY_NAME=$2 ;; --poll) POLL=$2 ;; --max-wait) MAX_WAIT=$2 ;;
    --endpoint-url) ENDPOINT_URL=$2 ;;
  esac
}

# require_int NAME VALUE MIN [MAX]
require_int() {
  local ok=1
  if ! [[ $2 =~ ^[0-9]+$ ]]; then ok=0
  elif (( 10#$2 < $3 )); then ok=0
  elif [[ -n ${4:-} ]] && (( 10#$2 > $4 )); then ok=0
  fi
  (( ok )) || die "$1 must be an integer >= $3${4:+ and <= $4}, got '$2'"
}

# bucket_of S3URI: the bucket name.
bucket_of() { local rest=${1#s3://}; printf '%s' "${rest%%/*}"; }

# vcpus_of TYPE: vCPUs of a c/m/r-style instance size (large 2, xlarge 4, Nxlarge 4N); '' if unknown.
vcpus_of() {
  local size=${1#*.} n
  n=${size%xlarge}
  case $size in
    large) echo 2 ;;
    xlarge) echo 4 ;;
    *xlarge) if [[ $n =~ ^[1-9][0-9]*$ ]]; then echo $(( n * 4 )); fi ;;
  esac
}

validate_args() {
  [[ $INPUT == s3://?* ]] || die "INPUT must be an s3:// URI, got '$INPUT'" \
    "(a local folder is not visible from the cluster: aws s3 sync it first)"
  [[ $OUTPUT == s3://?* ]] || die "OUTPUT must be an s3:// URI, got '$OUTPUT'"
  [[ -z $VARIANCE || -z $K ]] || die "--variance and --k are exclusive: give one"
  [[ $RELEASE =~ ^emr-7\.[0-9]+\.[0-9]+$ ]] ||
    die "--release must be an EMR 7.x label such as emr-7.12.0, got '$RELEASE'" \
        "(the bundle targets Amazon Linux 2023)"
  [[ $REGION =~ ^[a-z]{2}(-[a-z]+)+-[0-9]+$ ]] || die "--region '$REGION' is not a region name such as eu-west-3"
  [[ $REGION == eu-* || $ALLOW_NON_EU == 1 ]] ||
    die "--region $REGION is outside the EU; the photos must stay there (docs/deploy.md)." \
        "Pass --allow-non-eu to override"
  require_int --core-count "$CORE_COUNT" 1
  require_int --executor-cores "$EXECUTOR_CORES" 1
  require_int --max-task-failures "$MAX_TASK_FAILURES" 1
  require_int --idle-timeout "$IDLE_TIMEOUT" 60 604800
  require_int --poll "$POLL" 1
  require_int --max-wait "$MAX_WAIT" 0
  [[ -z $EXECUTORS ]] || require_int --executors "$EXECUTORS" 1
  local kv
  for kv in ${TAGS[@]+"${TAGS[@]}"} ${CONFS[@]+"${CONFS[@]}"}; do
    [[ $kv == ?*=* ]] || die "--tag and --conf take K=V, got '$kv'"
  done
  if [[ -n $BUNDLE ]]; then
    [[ -f $BUNDLE ]] || die "--bundle $BUNDLE: no such file (build one with tools/bundle.sh)"
    [[ -z $BUNDLE_MODEL ]] || die "--bundle-model builds a bundle: it cannot go with --bundle"
  fi
  [[ -f $APP ]] || die "the Spark application $APP is missing (--app FILE)"
  if [[ -n $MODEL && $MODEL != s3://* && $MODEL != ./orchard/* ]]; then
    [[ -f $MODEL ]] || die "--model $MODEL: not an s3:// URI, a ./orchard/ path in the bundle, or a local file"
  fi
}

# derive_defaults: run id, S3 locations, executor count, aws global options.
derive_defaults() {
  local bucket
  bucket=$(bucket_of "$OUTPUT")
  RUN_ID=${RUN_ID:-orchard-$(date -u +%Y%m%d-%H%M%S)}
  NAME=${NAME:-orchard $RUN_ID}
  CODE_URI=${CODE_URI:-s3://$bucket/orchard-code/$RUN_ID/}
  LOG_URI=${LOG_URI:-s3://$bucket/orchard-logs/}
  [[ $CODE_URI == s3://?* ]] || die "--code-uri must be an s3:// URI, got '$CODE_URI'"
  [[ $LOG_URI == s3://?* ]] || die "--log-uri must be an s3:// URI, got '$LOG_URI'"
  CODE_URI=${CODE_URI%/}/ LOG_URI=${LOG_URI%/}/
  if [[ -z $EXECUTORS ]]; then
    local vcpus
    vcpus=$(vcpus_of "$CORE_TYPE")
    [[ -n $vcpus ]] || die "cannot tell the vCPUs of --core-type $CORE_TYPE: give --executors N"
    EXECUTORS=$(( CORE_COUNT * vcpus / EXECUTOR_CORES - 1 ))
    (( EXECUTORS >= 1 )) || EXECUTORS=1
  fi
  AWS_GLOBAL=(--region "$REGION")
  [[ -z $ENDPOINT_URL ]] || AWS_GLOBAL+=(--endpoint-url "$ENDPOINT_URL")
}

# --- the steps ---------------------------------------------------------------------------------------

# build_bundle: sets BUNDLE from tools/bundle.sh's last output line (a placeholder in --dry-run).
build_bundle() {
  [[ -z $BUNDLE ]] || return 0
  local cmd=(tools/bundle.sh)
  [[ -z $BUNDLE_MODEL ]] || cmd+=(--model "$BUNDLE_MODEL")
  if (( DRY_RUN )); then
    BUNDLE=$REPO/dist/orchard-VERSION-linux-x86_64.tar.gz
    info "dry run: \`$(shell_line "${cmd[@]}")\` not run; using the placeholder $BUNDLE"
    return 0
  fi
  info "building the worker archive: $(shell_line "${cmd[@]}")"
  local out
  out=$(cd "$REPO" && "${cmd[@]}" | tee /dev/stderr | tail -n 1) ||
    die "tools/bundle.sh failed (its output is above); fix it or pass --bundle FILE"
  [[ $out == /* ]] || out=$REPO/$out
  [[ -f $out ]] || die "tools/bundle.sh's last line '$out' is not a file; pass --bundle FILE"
  BUNDLE=$out
}

# upload LOCAL URI: aws s3 cp.
upload() {
  progress "uploading $(basename "$1") to $2"
  aws_run "that bucket $(bucket_of "$2") exists, that your credentials may s3:PutObject there, and the region" \
    s3 cp --only-show-errors "$1" "$2" >&2
}

upload_code() {
  BUNDLE_URI=$CODE_URI$(basename "$BUNDLE")
  APP_URI=$CODE_URI$(basename "$APP")
  upload "$BUNDLE" "$BUNDLE_URI"
  upload "$APP" "$APP_URI"
  if [[ -n $MODEL && $MODEL != s3://* && $MODEL != ./orchard/* ]]; then
    local model_uri
    model_uri=${CODE_URI}models/$(basename "$MODEL")
    upload "$MODEL" "$model_uri"
    MODEL=$model_uri
  fi
}

# step_args: sets STEP_ARGS, the step's command line (one word per element).
step_args() {
  STEP_ARGS=(spark-submit --deploy-mode cluster --name "orchard $RUN_ID"
             --archives "$BUNDLE_URI#orchard")
  local kv
  for kv in ${CONFS[@]+"${CONFS[@]}"}; do STEP_ARGS+=(--conf "$kv"); done
  STEP_ARGS+=("$APP_URI" run "$INPUT" "$OUTPUT")
  [[ -z $MODEL ]] || STEP_ARGS+=(--model "$MODEL")
  [[ -z $GLOB ]] || STEP_ARGS+=(--glob "$GLOB")
  [[ -z $SHARD_SIZE ]] || STEP_ARGS+=(--shard-size "$SHARD_SIZE")
  [[ -z $VARIANCE ]] || STEP_ARGS+=(--variance "$VARIANCE")
  [[ -z $K ]] || STEP_ARGS+=(--k "$K")
}

# configurations_json: spark-defaults for a static, fault-tolerant job. The driver and executors
# run on the node's python3 (EMR 7: 3.9, with pyspark: all the application needs) unless --python;
# orchard finds each bucket's region itself, so AWS_REGION is passed only when --region was given.
configurations_json() {
  local props
  props=$(printf '%s:%s,' \
    '"spark.dynamicAllocation.enabled"' '"false"' \
    '"spark.task.maxFailures"' "$(json_str "$MAX_TASK_FAILURES")" \
    '"spark.executor.instances"' "$(json_str "$EXECUTORS")" \
    '"spark.executor.cores"' "$(json_str "$EXECUTOR_CORES")" \
    '"spark.executor.memory"' "$(json_str "$EXECUTOR_MEMORY")" \
    '"spark.executor.memoryOverhead"' "$(json_str "$EXECUTOR_OVERHEAD")")
  if [[ -n $PYTHON ]]; then
    props+=$(printf '%s:%s,' \
      '"spark.pyspark.python"' "$(json_str "$PYTHON")" \
      '"spark.pyspark.driver.python"' "$(json_str "$PYTHON")")
  fi
  if (( REGION_GIVEN )); then
    props+=$(printf '%s:%s,' \
      '"spark.executorEnv.AWS_REGION"' "$(json_str "$REGION")" \
      '"spark.yarn.appMasterEnv.AWS_REGION"' "$(json_str "$REGION")")
  fi
  printf '[{"Classification":"spark-defaults","Properties":{%s}}]' "${props%,}"
}

create_cluster() {
  step_args
  local steps ec2 tags=(project=orchard "run-id=$RUN_ID" ${TAGS[@]+"${TAGS[@]}"})
  # CONTINUE: a failed step leaves the cluster to --auto-terminate / the idle policy, logs intact
  steps=$(printf '[{"Type":"CUSTOM_JAR","Name":%s,"ActionOnFailure":"CONTINUE","Jar":"command-runner.jar","Args":%s}]' \
    "$(json_str "orchard run $RUN_ID")" "$(json_list "${STEP_ARGS[@]}")")
  ec2="InstanceProfile=$INSTANCE_PROFILE${SUBNET:+,SubnetId=$SUBNET}${KEY_NAME:+,KeyName=$KEY_NAME}"
  local terminate=--auto-terminate
  (( KEEP_CLUSTER )) && terminate=--no-auto-terminate
  progress "creating the EMR cluster '$NAME' ($RELEASE, $REGION: 1 x $MASTER_TYPE + $CORE_COUNT x $CORE_TYPE)"
  local hint="the EMR roles $SERVICE_ROLE and $INSTANCE_PROFILE exist (aws emr create-default-roles),"
  hint+=" that $RELEASE and the instance types are offered in $REGION,"
  hint+=" and your elasticmapreduce:RunJobFlow and iam:PassRole permissions"
  CLUSTER_ID=$(aws_run "$hint" \
    emr create-cluster \
    --name "$NAME" \
    --release-label "$RELEASE" \
    --applications Name=Spark \
    --instance-groups "InstanceGroupType=MASTER,InstanceCount=1,InstanceType=$MASTER_TYPE,Name=primary" \
                      "InstanceGroupType=CORE,InstanceCount=$CORE_COUNT,InstanceType=$CORE_TYPE,Name=core" \
    --service-role "$SERVICE_ROLE" \
    --ec2-attributes "$ec2" \
    --log-uri "$LOG_URI" \
    --tags "${tags[@]}" \
    --configurations "$(configurations_json)" \
    --auto-termination-policy "IdleTimeout=$IDLE_TIMEOUT" \
    "$terminate" \
    --steps "$steps" \
    --query ClusterId --output text)
  (( DRY_RUN )) && CLUSTER_ID=CLUSTER_ID
  STEP_ID=$(aws_run "that cluster $CLUSTER_ID exists in $REGION and your elasticmapreduce:ListSteps permission" \
    emr list-steps --cluster-id "$CLUSTER_ID" --query 'Steps[0].Id' --output text)
  (( DRY_RUN )) && STEP_ID=STEP_ID
  progress "cluster $CLUSTER_ID, step $STEP_ID"
}

# step_state: the step's state (PENDING, RUNNING, COMPLETED, FAILED, ...).
step_state() {
  aws_run "that cluster $CLUSTER_ID exists in $REGION and your elasticmapreduce:DescribeStep permission" \
    emr describe-step --cluster-id "$CLUSTER_ID" --step-id "$STEP_ID" \
    --query Step.Status.State --output text
}

wait_for_step() {
  if (( DRY_RUN )); then step_state; return 0; fi
  info "waiting for step $STEP_ID (a status check every ${POLL}s; Ctrl-C stops waiting, not the cluster)"
  local start=$SECONDS state last=""
  while :; do
    state=$(step_state)
    [[ $state == "$last" ]] || info "step $STEP_ID: $state ($(( SECONDS - start ))s)"
    last=$state
    case $state in
      COMPLETED) return 0 ;;
      FAILED|CANCELLED|INTERRUPTED) report_failure "$state" ;;
    esac
    if (( MAX_WAIT > 0 && SECONDS - start >= MAX_WAIT )); then
      print_locations
      die --code 3 "step $STEP_ID is still $state after ${MAX_WAIT}s; the cluster keeps going" \
        "(watch it in the EMR console or rerun with the same OUTPUT later)"
    fi
    sleep "$POLL"
  done
}

report_failure() {
  local details
  details=$(aws_run "that cluster $CLUSTER_ID exists in $REGION" \
    emr describe-step --cluster-id "$CLUSTER_ID" --step-id "$STEP_ID" \
    --query 'Step.Status.FailureDetails.[Reason,Message,LogFile]' --output text | tr '\t\n' '  ')
  print_locations
  die --code 2 "step $STEP_ID $1: ${details:-no failure details};" \
    "read the step's stderr.gz under ${LOG_URI}$CLUSTER_ID/steps/$STEP_ID/" \
    "and rerun with the same OUTPUT to resume"
}

print_locations() {
  local console="https://$REGION.console.aws.amazon.com/emr/home?region=$REGION#/clusterDetails/$CLUSTER_ID"
  cat <<EOF
cluster:     $CLUSTER_ID ($REGION) $console
step:        $STEP_ID
results:     $OUTPUT (complete when ${OUTPUT%/}/_SUCCESS exists; report at ${OUTPUT%/}/report/index.html)
step logs:   ${LOG_URI}$CLUSTER_ID/steps/$STEP_ID/ (spark-submit's stdout.gz, stderr.gz)
driver logs: ${LOG_URI}$CLUSTER_ID/containers/ (application_*/container_*_000001/: the driver's progress lines)
Spark UI:    EMR console > cluster $CLUSTER_ID > Applications > Spark History Server
EOF
}

main() {
  parse_args "$@"
  validate_args
  derive_defaults
  (( DRY_RUN )) || command -v aws >/dev/null || die "the AWS CLI (aws) is not on PATH: install it and run aws configure"
  build_bundle
  upload_code
  create_cluster
  (( DRY_RUN )) && { (( WAIT )) && wait_for_step; return 0; }
  if (( WAIT )); then
    wait_for_step
    info "step $STEP_ID completed"
  fi
  print_locations
}

exec 3>&1
main "$@"
