#!/usr/bin/env bash
# Build, in a Google Cloud project, everything xray-mlops runs on GKE, then install it:
# APIs, a GKE cluster with Workload Identity, an autoscaling GPU node pool that scales to zero,
# the bucket (dataset and registry), the Artifact Registry repository, Google service accounts
# bound to the cluster's service accounts, the dataset notification (GCS -> Pub/Sub -> push to
# the EventListener), Tekton Pipelines and Triggers at pinned versions, the Secrets, and
# `kubectl apply -k tekton/`.
#
# Settings: tekton/config.env (CONFIG=FILE reads another). Idempotent: each step looks before it
# creates, so the script can be run again after a failure or a change of settings.
#
# Usage:
#   cluster/gke_setup.sh
#   SMTP_PASSWORD=... cluster/gke_setup.sh      # also store the SMTP password in a Secret
#   INSTALL_CHAINS=1 cluster/gke_setup.sh       # also install and configure Tekton Chains
# Needs: gcloud (logged in, `gcloud auth login`), kubectl, base64.
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
prefix_in_bucket "$REGISTRY_URI" >/dev/null
# IMAGE_REPO is LOCATION-docker.pkg.dev/PROJECT/REPOSITORY.
AR_HOST=${IMAGE_REPO%%/*}
AR_LOCATION=${AR_HOST%-docker.pkg.dev}
AR_REPOSITORY=${IMAGE_REPO##*/}

log "APIs"
gcloud services enable container.googleapis.com compute.googleapis.com artifactregistry.googleapis.com \
  storage.googleapis.com pubsub.googleapis.com iamcredentials.googleapis.com

log "GKE cluster $CLUSTER in $ZONE (Workload Identity)"
if ! exists gcloud container clusters describe "$CLUSTER" --zone "$ZONE"; then
  gcloud container clusters create "$CLUSTER" --zone "$ZONE" \
    --release-channel regular --workload-pool "$PROJECT_ID.svc.id.goog" --enable-ip-alias \
    --machine-type e2-standard-8 --num-nodes 1 --enable-autoscaling --min-nodes 1 --max-nodes 4
fi

log "GPU node pool ($GPU_ACCELERATOR, autoscaling from 0; GKE taints it nvidia.com/gpu)"
if ! exists gcloud container node-pools describe "$GPU_POOL" --cluster "$CLUSTER" --zone "$ZONE"; then
  gcloud container node-pools create "$GPU_POOL" --cluster "$CLUSTER" --zone "$ZONE" \
    --machine-type "$GPU_MACHINE_TYPE" \
    --accelerator "type=$GPU_ACCELERATOR,count=1,gpu-driver-version=default" \
    --num-nodes 0 --enable-autoscaling --min-nodes 0 --max-nodes 2 \
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

log "Google service accounts and Workload Identity (no keys)"
ensure_service_account() {
  local email=$1
  if ! exists gcloud iam service-accounts describe "$email"; then
    gcloud iam service-accounts create "${email%%@*}" --display-name "xray-mlops ${email%%@*}"
  fi
}
# Lets the Kubernetes service account NAMESPACE/KSA act as the Google service account GSA.
bind_workload_identity() {
  local gsa=$1 namespace=$2 ksa=$3
  gcloud iam service-accounts add-iam-policy-binding "$gsa" --role roles/iam.workloadIdentityUser \
    --member "serviceAccount:$PROJECT_ID.svc.id.goog[$namespace/$ksa]" >/dev/null
}
ensure_service_account "$PIPELINE_GSA"
ensure_service_account "$API_GSA"
gcloud storage buckets add-iam-policy-binding "gs://$BUCKET" \
  --member "serviceAccount:$PIPELINE_GSA" --role roles/storage.objectAdmin >/dev/null
gcloud storage buckets add-iam-policy-binding "gs://$BUCKET" \
  --member "serviceAccount:$API_GSA" --role roles/storage.objectViewer >/dev/null
gcloud artifacts repositories add-iam-policy-binding "$AR_REPOSITORY" --location "$AR_LOCATION" \
  --member "serviceAccount:$PIPELINE_GSA" --role roles/artifactregistry.writer >/dev/null
bind_workload_identity "$PIPELINE_GSA" "$NAMESPACE" xray-pipeline
bind_workload_identity "$PIPELINE_GSA" "$NAMESPACE" xray-promote
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
read_token() {
  kubectl --namespace "$NAMESPACE" get secret "$1" --output 'jsonpath={.data.token}' | base64 --decode
}
ensure_token_secret xray-mlops-github-webhook
ensure_token_secret xray-mlops-pubsub-push
if [[ -n "${SMTP_PASSWORD:-}" ]]; then
  printf '%s' "$SMTP_PASSWORD" \
    | kubectl --namespace "$NAMESPACE" create secret generic xray-mlops-smtp --from-file password=/dev/stdin \
        --dry-run=client --output yaml \
    | kubectl apply --filename -
elif ! exists kubectl --namespace "$NAMESPACE" get secret xray-mlops-smtp; then
  echo "note: no SMTP password stored; run again with SMTP_PASSWORD=... if $SMTP_HOST needs one" >&2
fi

log "Public HTTPS entry of the EventListener: static address and managed certificate"
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
PUSH_ENDPOINT="https://$TRIGGERS_HOST/?token=$(read_token xray-mlops-pubsub-push)"
if exists gcloud pubsub subscriptions describe "$SUBSCRIPTION"; then
  gcloud pubsub subscriptions update "$SUBSCRIPTION" --push-endpoint "$PUSH_ENDPOINT" >/dev/null
else
  gcloud pubsub subscriptions create "$SUBSCRIPTION" --topic "$TOPIC" \
    --push-endpoint "$PUSH_ENDPOINT" --ack-deadline 60 >/dev/null
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
