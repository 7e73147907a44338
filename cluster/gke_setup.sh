#!/usr/bin/env bash
# Build, in a Google Cloud project, everything xray-mlops runs on GKE, then install it:
# APIs, a GKE cluster with Workload Identity and a node service account of its own, an
# autoscaling GPU node pool that scales to zero, the bucket (dataset and registry), the Artifact
# Registry repository, the prebuilt cluster image, Google service accounts bound to the cluster's
# service accounts (training writes only testing/, promotion alone production/), the dataset
# notification (GCS -> Pub/Sub -> push to the EventListener), Tekton Pipelines and Triggers at
# pinned versions, the Secrets, and `kubectl apply -k tekton/`.
#
# Settings: tekton/config.env (CONFIG=FILE reads another). Idempotent: each step looks before it
# creates, so the script can be run again after a failure or a change of settings.
#
# Usage:
#   cluster/gke_setup.sh
#   SMTP_PASSWORD=... cluster/gke_setup.sh      # also store the SMTP password in a Secret
#   INSTALL_CHAINS=1 cluster/gke_setup.sh       # also install and configure Tekton Chains
#   GIT_TOKEN=... cluster/gke_setup.sh          # a private repository: store its HTTPS token
# Needs: gcloud (logged in, `gcloud auth login`), gke-gcloud-auth-plugin, kubectl 1.31 or later,
# base64; a GPUS_ALL_REGIONS quota of 1 or more and a ZONE that offers GPU_ACCELERATOR (both
# checked before anything is created).
set -euo pipefail

TEKTON_PIPELINES_VERSION=v1.15.0
TEKTON_TRIGGERS_VERSION=v0.37.0
TEKTON_CHAINS_VERSION=v0.29.2
TEKTON_RELEASES=https://infra.tekton.dev/tekton-releases
NAMESPACE=xray-mlops
TOPIC=xray-mlops-dataset
SUBSCRIPTION=xray-mlops-dataset-push
INGRESS_NAME=xray-mlops-triggers
GPU_POOL=gpu
MIN_KUBECTL_MINOR=31

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CONFIG=${CONFIG:-$REPO_ROOT/tekton/config.env}
# shellcheck source=SCRIPTDIR/../tekton/config.env
source "$CONFIG"
export CLOUDSDK_CORE_PROJECT=$PROJECT_ID

log() { printf '\n==> %s\n' "$*" >&2; }
# Runs a lookup command without its output: the exit status says whether the thing exists.
exists() { "$@" >/dev/null 2>&1; }
random_token() { head -c 32 /dev/urandom | base64 | tr -d '/+=\n' | head -c 40; }

# gs://BUCKET/PREFIX -> PREFIX; the dataset and the registry must live in BUCKET.
prefix_in_bucket() {
  local uri=$1
  case "$uri" in
    "gs://$BUCKET/"?*) printf '%s' "${uri#"gs://$BUCKET/"}" ;;
    *) echo "$uri is not under gs://$BUCKET/ (see $CONFIG)" >&2; exit 1 ;;
  esac
}
DATASET_PREFIX=$(prefix_in_bucket "$DATASET_URI")
REGISTRY_PREFIX=$(prefix_in_bucket "$REGISTRY_URI")
# IMAGE_REPO is LOCATION-docker.pkg.dev/PROJECT/REPOSITORY.
AR_HOST=${IMAGE_REPO%%/*}
AR_LOCATION=${AR_HOST%-docker.pkg.dev}
AR_REPOSITORY=${IMAGE_REPO##*/}

log "Prerequisites"
need() {
  if ! command -v "$1" >/dev/null 2>&1; then
    echo "$1 is not installed: $2" >&2
    exit 1
  fi
}
need gcloud "https://cloud.google.com/sdk/docs/install"
need kubectl "gcloud components install kubectl (or a package of kubectl 1.$MIN_KUBECTL_MINOR or later)"
need gke-gcloud-auth-plugin "gcloud components install gke-gcloud-auth-plugin (kubectl signs in to GKE with it)"
kubectl_minor=$(kubectl version --client --output json | sed -n 's/.*"minor": *"\([0-9]*\).*/\1/p' | head -n 1)
if (( ${kubectl_minor:-0} < MIN_KUBECTL_MINOR )); then
  echo "kubectl 1.${kubectl_minor:-?} is too old for the cluster: install 1.$MIN_KUBECTL_MINOR or later" >&2
  exit 1
fi

log "APIs"
gcloud services enable container.googleapis.com compute.googleapis.com artifactregistry.googleapis.com \
  storage.googleapis.com pubsub.googleapis.com iamcredentials.googleapis.com cloudbuild.googleapis.com

log "GPU: $GPU_ACCELERATOR offered in $ZONE, and a GPUS_ALL_REGIONS quota"
if [[ -z $(gcloud compute accelerator-types list --filter "zone:$ZONE AND name=$GPU_ACCELERATOR" --format 'value(name)') ]]; then
  echo "$ZONE does not offer $GPU_ACCELERATOR; the zones that do:" >&2
  echo "  gcloud compute accelerator-types list --filter name=$GPU_ACCELERATOR" >&2
  exit 1
fi
gpu_quota=$(gcloud compute project-info describe --flatten quotas --filter quotas.metric=GPUS_ALL_REGIONS \
  --format 'value(quotas.limit)')
gpu_quota=${gpu_quota%%.*}
if (( ${gpu_quota:-0} < 1 )); then
  echo "the project's GPUS_ALL_REGIONS quota is ${gpu_quota:-0}: request 1 or more (Console: IAM & Admin > Quotas)" >&2
  exit 1
fi

log "Node service account $NODE_GSA (nodes pull images with it, not with Workload Identity)"
ensure_service_account() {
  local email=$1
  if ! exists gcloud iam service-accounts describe "$email"; then
    gcloud iam service-accounts create "${email%%@*}" --display-name "xray-mlops ${email%%@*}"
  fi
}
ensure_service_account "$NODE_GSA"
gcloud projects add-iam-policy-binding "$PROJECT_ID" --member "serviceAccount:$NODE_GSA" \
  --role roles/container.defaultNodeServiceAccount --condition None >/dev/null

log "GKE cluster $CLUSTER in $ZONE (Workload Identity)"
if ! exists gcloud container clusters describe "$CLUSTER" --zone "$ZONE"; then
  gcloud container clusters create "$CLUSTER" --zone "$ZONE" \
    --release-channel regular --workload-pool "$PROJECT_ID.svc.id.goog" --enable-ip-alias \
    --service-account "$NODE_GSA" \
    --machine-type e2-standard-8 --num-nodes 1 --enable-autoscaling --min-nodes 1 --max-nodes 4
fi

log "GPU node pool ($GPU_ACCELERATOR, autoscaling from 0; GKE taints it nvidia.com/gpu)"
if ! exists gcloud container node-pools describe "$GPU_POOL" --cluster "$CLUSTER" --zone "$ZONE"; then
  gcloud container node-pools create "$GPU_POOL" --cluster "$CLUSTER" --zone "$ZONE" \
    --machine-type "$GPU_MACHINE_TYPE" \
    --accelerator "type=$GPU_ACCELERATOR,count=1,gpu-driver-version=default" \
    --num-nodes 0 --enable-autoscaling --min-nodes 0 --max-nodes 2 --service-account "$NODE_GSA" \
    --workload-metadata GKE_METADATA
fi
gcloud container clusters get-credentials "$CLUSTER" --zone "$ZONE"

log "Bucket gs://$BUCKET and image repository $IMAGE_REPO"
if ! exists gcloud storage buckets describe "gs://$BUCKET"; then
  gcloud storage buckets create "gs://$BUCKET" --location "$REGION" --uniform-bucket-level-access
fi
if ! exists gcloud artifacts repositories describe "$AR_REPOSITORY" --location "$AR_LOCATION"; then
  gcloud artifacts repositories create "$AR_REPOSITORY" --location "$AR_LOCATION" --repository-format docker
fi
gcloud artifacts repositories add-iam-policy-binding "$AR_REPOSITORY" --location "$AR_LOCATION" \
  --member "serviceAccount:$NODE_GSA" --role roles/artifactregistry.reader >/dev/null

log "Cluster image $CLUSTER_IMAGE (cancel-superseded, notify-failure), built once per tag"
if ! exists gcloud artifacts docker images describe "$CLUSTER_IMAGE"; then
  build_config=$(mktemp)
  cat > "$build_config" <<EOF
steps:
  - name: gcr.io/cloud-builders/docker
    env: [DOCKER_BUILDKIT=1]
    args: [build, --file, cluster/Dockerfile, --tag, "$CLUSTER_IMAGE", .]
images: ["$CLUSTER_IMAGE"]
EOF
  gcloud builds submit "$REPO_ROOT" --config "$build_config"
  rm -f "$build_config"
fi

log "Google service accounts and Workload Identity (no keys)"
# Lets the Kubernetes service account NAMESPACE/KSA act as the Google service account GSA.
bind_workload_identity() {
  local gsa=$1 namespace=$2 ksa=$3
  gcloud iam service-accounts add-iam-policy-binding "$gsa" --role roles/iam.workloadIdentityUser \
    --member "serviceAccount:$PROJECT_ID.svc.id.goog[$namespace/$ksa]" >/dev/null
}
# Grants ROLE on the bucket's objects whose names satisfy the IAM Condition EXPRESSION (CEL).
bind_bucket_condition() {
  local member=$1 role=$2 title=$3 expression=$4 condition
  condition=$(mktemp)
  printf 'title: %s\nexpression: "%s"\n' "$title" "$expression" > "$condition"
  gcloud storage buckets add-iam-policy-binding "gs://$BUCKET" --member "$member" --role "$role" \
    --condition-from-file "$condition" >/dev/null
  rm -f "$condition"
}
ensure_service_account "$PIPELINE_GSA"
ensure_service_account "$PROMOTE_GSA"
ensure_service_account "$API_GSA"
for gsa in "$PIPELINE_GSA" "$PROMOTE_GSA" "$API_GSA"; do
  gcloud storage buckets add-iam-policy-binding "gs://$BUCKET" \
    --member "serviceAccount:$gsa" --role roles/storage.objectViewer >/dev/null
done
# The pipelines' identity runs pushed code (and image builds): it writes testing/ and the
# registry's bookkeeping (version counter, index, leases), the dataset's recorded split
# assignment (splits.json, model/groups.py), and beside a production version only
# its test runs and evaluations; production/ itself and the pointer are the promotion identity's.
# An earlier installation granted it objectAdmin on the whole bucket: that grant goes.
gcloud storage buckets remove-iam-policy-binding "gs://$BUCKET" \
  --member "serviceAccount:$PIPELINE_GSA" --role roles/storage.objectAdmin >/dev/null 2>&1 || true
registry_objects="projects/_/buckets/$BUCKET/objects/$REGISTRY_PREFIX"
bind_bucket_condition "serviceAccount:$PIPELINE_GSA" roles/storage.objectUser "xray-mlops pipeline writes testing" \
  "resource.name.startsWith('$registry_objects/testing/') || resource.name.startsWith('$registry_objects/index/') || resource.name.startsWith('$registry_objects/locks/') || resource.name == '$registry_objects/counter.json' || resource.name.extract('$registry_objects/production/{version}/tests/') != '' || resource.name.extract('$registry_objects/production/{version}/evaluations/') != '' || resource.name == 'projects/_/buckets/$BUCKET/objects/$DATASET_PREFIX/splits.json'"
bind_bucket_condition "serviceAccount:$PROMOTE_GSA" roles/storage.objectUser "xray-mlops promotion writes the registry" \
  "resource.name.startsWith('$registry_objects/')"
gcloud artifacts repositories add-iam-policy-binding "$AR_REPOSITORY" --location "$AR_LOCATION" \
  --member "serviceAccount:$PIPELINE_GSA" --role roles/artifactregistry.writer >/dev/null
bind_workload_identity "$PIPELINE_GSA" "$NAMESPACE" xray-pipeline
bind_workload_identity "$PROMOTE_GSA" "$NAMESPACE" xray-promote
bind_workload_identity "$API_GSA" "$NAMESPACE" xray-api

log "Tekton Pipelines $TEKTON_PIPELINES_VERSION and Triggers $TEKTON_TRIGGERS_VERSION"
kubectl apply --filename "$TEKTON_RELEASES/pipeline/previous/$TEKTON_PIPELINES_VERSION/release.yaml"
kubectl apply --filename "$TEKTON_RELEASES/triggers/previous/$TEKTON_TRIGGERS_VERSION/release.yaml"
kubectl apply --filename "$TEKTON_RELEASES/triggers/previous/$TEKTON_TRIGGERS_VERSION/interceptors.yaml"
kubectl wait --namespace tekton-pipelines --for condition=Available deployment --all --timeout 5m

log "Namespace $NAMESPACE and its Secrets (generated here, never in the repository)"
kubectl create namespace "$NAMESPACE" --dry-run=client --output yaml | kubectl apply --filename -
ensure_token_secret() {
  local name=$1
  if ! exists kubectl --namespace "$NAMESPACE" get secret "$name"; then
    random_token | kubectl --namespace "$NAMESPACE" create secret generic "$name" --from-file token=/dev/stdin
  fi
}
ensure_token_secret xray-mlops-github-webhook
if [[ -n "${GIT_TOKEN:-}" ]]; then
  git_host=${GIT_URL#https://}
  git_host=${git_host%%/*}
  printf 'https://x-access-token:%s@%s\n' "$GIT_TOKEN" "$git_host" \
    | kubectl --namespace "$NAMESPACE" create secret generic xray-mlops-git --from-file .git-credentials=/dev/stdin \
        --dry-run=client --output yaml \
    | kubectl apply --filename -
fi
if [[ -n "${SMTP_PASSWORD:-}" ]]; then
  printf '%s' "$SMTP_PASSWORD" \
    | kubectl --namespace "$NAMESPACE" create secret generic xray-mlops-smtp --from-file password=/dev/stdin \
        --dry-run=client --output yaml \
    | kubectl apply --filename -
elif ! exists kubectl --namespace "$NAMESPACE" get secret xray-mlops-smtp; then
  echo "note: no SMTP password stored; run again with SMTP_PASSWORD=... if $SMTP_HOST needs one" >&2
fi

log "Public HTTPS entry of the EventListener: static address, certificate, HTTP -> HTTPS, health check"
if ! exists gcloud compute addresses describe "$INGRESS_NAME" --global; then
  gcloud compute addresses create "$INGRESS_NAME" --global
fi
ADDRESS=$(gcloud compute addresses describe "$INGRESS_NAME" --global --format 'value(address)')
TRIGGERS_HOST=${TRIGGERS_HOST:-${ADDRESS//./-}.sslip.io}
kubectl apply --filename - <<EOF
apiVersion: networking.gke.io/v1
kind: ManagedCertificate
metadata:
  name: $INGRESS_NAME
  namespace: $NAMESPACE
spec:
  domains:
    - $TRIGGERS_HOST
---
apiVersion: networking.gke.io/v1beta1
kind: FrontendConfig
metadata:
  name: $INGRESS_NAME
  namespace: $NAMESPACE
spec:
  redirectToHttps:
    enabled: true
---
apiVersion: cloud.google.com/v1
kind: BackendConfig
metadata:
  name: $INGRESS_NAME
  namespace: $NAMESPACE
spec:
  healthCheck:
    type: HTTP
    requestPath: /live
    port: 8080
  # The Pub/Sub push URL carries its token: keep request URLs out of the load balancer's logs.
  logging:
    enable: false
EOF

log "Dataset notification: gs://$BUCKET/$DATASET_PREFIX/manifest.json -> Pub/Sub -> https://$TRIGGERS_HOST/"
if ! exists gcloud pubsub topics describe "$TOPIC"; then
  gcloud pubsub topics create "$TOPIC"
fi
GCS_AGENT=$(gcloud storage service-agent)
gcloud pubsub topics add-iam-policy-binding "$TOPIC" \
  --member "serviceAccount:$GCS_AGENT" --role roles/pubsub.publisher >/dev/null
if ! gcloud storage buckets notifications list "gs://$BUCKET" --format 'value(topic)' | grep -q "/topics/$TOPIC\$"; then
  gcloud storage buckets notifications create "gs://$BUCKET" --topic "$TOPIC" \
    --event-types OBJECT_FINALIZE --object-prefix "$DATASET_PREFIX/manifest.json" \
    --custom-attributes "datasetManifest=$DATASET_PREFIX/manifest.json" --payload-format json
fi
# Each push is signed with an OIDC token of PUBSUB_PUSH_GSA in its Authorization header, which
# the listener's pubsub-oidc interceptor verifies: no secret in the URL. Pub/Sub's service agent
# mints the tokens.
ensure_service_account "$PUBSUB_PUSH_GSA"
PROJECT_NUMBER=$(gcloud projects describe "$PROJECT_ID" --format 'value(projectNumber)')
gcloud iam service-accounts add-iam-policy-binding "$PUBSUB_PUSH_GSA" --role roles/iam.serviceAccountTokenCreator \
  --member "serviceAccount:service-$PROJECT_NUMBER@gcp-sa-pubsub.iam.gserviceaccount.com" >/dev/null
push=(--push-endpoint "https://$TRIGGERS_HOST/" --push-auth-service-account "$PUBSUB_PUSH_GSA"
      --push-auth-token-audience "$PUBSUB_AUDIENCE")
if exists gcloud pubsub subscriptions describe "$SUBSCRIPTION"; then
  gcloud pubsub subscriptions update "$SUBSCRIPTION" "${push[@]}" >/dev/null
else
  gcloud pubsub subscriptions create "$SUBSCRIPTION" --topic "$TOPIC" "${push[@]}" --ack-deadline 60 >/dev/null
fi

if [[ "${INSTALL_CHAINS:-0}" == 1 ]]; then
  log "Tekton Chains $TEKTON_CHAINS_VERSION, signing with Cloud KMS"
  gcloud services enable cloudkms.googleapis.com
  kubectl apply --filename "$TEKTON_RELEASES/chains/previous/$TEKTON_CHAINS_VERSION/release.yaml"
  # CHAINS_KMS_KEY is gcpkms://projects/P/locations/L/keyRings/R/cryptoKeys/K.
  key_path=${CHAINS_KMS_KEY#gcpkms://}
  key_location=$(cut -d/ -f4 <<<"$key_path")
  key_ring=$(cut -d/ -f6 <<<"$key_path")
  key_name=$(cut -d/ -f8 <<<"$key_path")
  if ! exists gcloud kms keyrings describe "$key_ring" --location "$key_location"; then
    gcloud kms keyrings create "$key_ring" --location "$key_location"
  fi
  if ! exists gcloud kms keys describe "$key_name" --keyring "$key_ring" --location "$key_location"; then
    gcloud kms keys create "$key_name" --keyring "$key_ring" --location "$key_location" \
      --purpose asymmetric-signing --default-algorithm ec-sign-p256-sha256
  fi
  ensure_service_account "$CHAINS_GSA"
  gcloud kms keys add-iam-policy-binding "$key_name" --keyring "$key_ring" --location "$key_location" \
    --member "serviceAccount:$CHAINS_GSA" --role roles/cloudkms.signerVerifier >/dev/null
  gcloud artifacts repositories add-iam-policy-binding "$AR_REPOSITORY" --location "$AR_LOCATION" \
    --member "serviceAccount:$CHAINS_GSA" --role roles/artifactregistry.writer >/dev/null
  bind_workload_identity "$CHAINS_GSA" tekton-chains tekton-chains-controller
fi

log "Tekton triggers, pipelines and tasks, RBAC, API Deployment (kubectl apply -k tekton/)"
kubectl wait --namespace tekton-pipelines --for condition=Available deployment --all --timeout 5m
if [[ "${INSTALL_CHAINS:-0}" == 1 ]]; then
  # kustomize refuses an overlay inside its base, so the overlay with the Chains component is
  # written next to tekton/ for the time of the apply.
  overlay=$(mktemp -d "$REPO_ROOT/.chains-overlay.XXXXXX")
  trap 'rm -rf "$overlay"' EXIT
  printf 'resources: [../tekton]\ncomponents: [../tekton/components/chains]\n' > "$overlay/kustomization.yaml"
  kubectl apply --kustomize "$overlay"
else
  kubectl apply --kustomize "$REPO_ROOT/tekton"
fi

log "Done"
cat >&2 <<EOF
GitHub webhook (repository settings -> Webhooks -> Add webhook):
  Payload URL   https://$TRIGGERS_HOST/
  Content type  application/json
  Secret        kubectl -n $NAMESPACE get secret xray-mlops-github-webhook -o jsonpath='{.data.token}' | base64 --decode
  Events        Just the push event
The managed certificate for $TRIGGERS_HOST can take 15-60 minutes to become active:
  kubectl -n $NAMESPACE get managedcertificate $INGRESS_NAME
Upload the dataset (its manifest.json last starts retraining):
  DATASET_URI=$DATASET_URI make data-push SRC=data/COVID-19_Radiography_Dataset
EOF
