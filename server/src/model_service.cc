#include "lcd/server/model_service.h"


#include <algorithm>
#include <exception>
#include <filesystem>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "lcd/base/logging.h"
#include "lcd/server/artifact_watcher.h"
#include "lcd/server/credentials.h"
#include "lcd/server/request_validation.h"
#include "lcd/server/status_mapping.h"

namespace lcd::server {
namespace {

lcd::v1::ModelState ToProtoState(ModelState s) {
  switch (s) {
    case ModelState::kLoading:
      return lcd::v1::MODEL_STATE_LOADING;
    case ModelState::kReady:
      return lcd::v1::MODEL_STATE_READY;
    case ModelState::kDraining:
      return lcd::v1::MODEL_STATE_DRAINING;
    case ModelState::kUnloaded:
      return lcd::v1::MODEL_STATE_UNLOADED;
    case ModelState::kFailed:
      return lcd::v1::MODEL_STATE_FAILED;
  }
  return lcd::v1::MODEL_STATE_UNSPECIFIED;
}

// Longest text put into a ModelStatus string field.
constexpr size_t kMaxFieldBytes = 4096;

// The registry's completion of an asynchronous load or unload: the model's
// status into `response`, then the call finishes. `response` and `reactor`
// stay valid until Finish.
std::function<void(absl::Status, ModelStatusInfo)> Reply(grpc::ServerUnaryReactor* reactor,
                                                         lcd::v1::ModelStatus* response) {
  return [reactor, response](absl::Status st, ModelStatusInfo info) {
    ToProto(info, response);
    reactor->Finish(ToGrpcStatus(st));
  };
}

// Finishes `reactor` with `st` for a call refused before any work.
grpc::ServerUnaryReactor* Refuse(grpc::CallbackServerContext* ctx, const absl::Status& st) {
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(ToGrpcStatus(st));
  return reactor;
}

grpc::ServerUnaryReactor* Unexpected(grpc::CallbackServerContext* ctx, const char* rpc,
                                     const std::exception* e) {
  LCD_LOG(ERROR) << rpc << ": unexpected exception: " << (e != nullptr ? e->what() : "unknown");
  return Refuse(ctx, absl::InternalError(absl::StrCat(rpc, ": unexpected error")));
}

}  // namespace

void ToProto(const ModelStatusInfo& info, lcd::v1::ModelStatus* out) {
  // Names, paths and errors come from clients and files: valid UTF-8 only.
  out->set_name(SanitizeUtf8(info.name, kMaxFieldBytes));
  out->set_state(ToProtoState(info.state));
  out->set_version(SanitizeUtf8(info.version, kMaxFieldBytes));
  out->set_source_path(SanitizeUtf8(info.path, kMaxFieldBytes));
  out->mutable_quantization()->set_method(SanitizeUtf8(info.quant_method, kMaxFieldBytes));
  out->mutable_quantization()->set_bits(info.quant_bits);
  out->mutable_quantization()->set_group_size(info.quant_group_size);
  out->set_memory_bytes(info.memory_bytes);
  out->set_error(SanitizeUtf8(info.error, kMaxFieldBytes));
  out->set_requests_running(info.running);
  out->set_requests_waiting(info.waiting);
}

absl::Status ModelServiceImpl::Authorize(grpc::CallbackServerContext* ctx, bool admin) const {
  if (admin_token_.empty()) {
    if (!admin) return absl::OkStatus();
    return absl::PermissionDeniedError(
        "model administration is disabled: start lcd-server with admin_token_file");
  }
  return CheckBearer(*ctx, admin_token_, "ModelService");
}

grpc::ServerUnaryReactor* ModelServiceImpl::ListModels(grpc::CallbackServerContext* ctx,
                                                       const lcd::v1::ListModelsRequest*,
                                                       lcd::v1::ListModelsResponse* response) {
  try {
    if (absl::Status st = Authorize(ctx, /*admin=*/false); !st.ok()) return Refuse(ctx, st);
    for (const ModelStatusInfo& info : registry_->List()) ToProto(info, response->add_models());
    return Refuse(ctx, absl::OkStatus());
  } catch (const std::exception& e) {
    return Unexpected(ctx, "ListModels", &e);
  } catch (...) {
    return Unexpected(ctx, "ListModels", nullptr);
  }
}

grpc::ServerUnaryReactor* ModelServiceImpl::GetModelStatus(
    grpc::CallbackServerContext* ctx, const lcd::v1::GetModelStatusRequest* request,
    lcd::v1::ModelStatus* response) {
  try {
    if (absl::Status st = Authorize(ctx, /*admin=*/false); !st.ok()) return Refuse(ctx, st);
    if (absl::Status st = ValidateGetModelStatusRequest(*request); !st.ok()) {
      return Refuse(ctx, st);
    }
    auto info = registry_->Status(request->name());
    if (info.ok()) ToProto(*info, response);
    return Refuse(ctx, info.status());
  } catch (const std::exception& e) {
    return Unexpected(ctx, "GetModelStatus", &e);
  } catch (...) {
    return Unexpected(ctx, "GetModelStatus", nullptr);
  }
}

grpc::ServerUnaryReactor* ModelServiceImpl::LoadModel(grpc::CallbackServerContext* ctx,
                                                      const lcd::v1::LoadModelRequest* request,
                                                      lcd::v1::ModelStatus* response) {
  try {
    if (absl::Status st = Authorize(ctx, /*admin=*/true); !st.ok()) return Refuse(ctx, st);
    if (absl::Status st = ValidateLoadModelRequest(*request); !st.ok()) return Refuse(ctx, st);
    if (request->artifact_version() > 0 || request->follow_latest()) {
      if (!store_) return Refuse(ctx, absl::FailedPreconditionError("no artifact store (start with --artifact-root)"));
      absl::StatusOr<std::vector<int64_t>> versions = PublishedVersions(store_->root, request->name());
      if (!versions.ok()) return Refuse(ctx, versions.status());
      int64_t version = request->artifact_version();
      if (request->follow_latest()) {
        if (versions->empty()) {
          return Refuse(ctx, absl::NotFoundError(absl::StrCat("no published version of '", request->name(), "'")));
        }
        version = versions->back();
      } else if (std::find(versions->begin(), versions->end(), version) == versions->end()) {
        return Refuse(ctx, absl::NotFoundError(absl::StrCat("version ", version, " of '", request->name(),
                                                            "' is not published")));
      }
      return LoadFromStore(ctx, request->name(), version, request->follow_latest(), response);
    }
    auto* reactor = ctx->DefaultReactor();
    registry_->LoadAsync(request->name(), request->path(), request->version(), drain_, Reply(reactor, response));
    return reactor;
  } catch (const std::exception& e) {
    return Unexpected(ctx, "LoadModel", &e);
  } catch (...) {
    return Unexpected(ctx, "LoadModel", nullptr);
  }
}

grpc::ServerUnaryReactor* ModelServiceImpl::UnloadModel(grpc::CallbackServerContext* ctx,
                                                        const lcd::v1::UnloadModelRequest* request,
                                                        lcd::v1::ModelStatus* response) {
  try {
    if (absl::Status st = Authorize(ctx, /*admin=*/true); !st.ok()) return Refuse(ctx, st);
    if (absl::Status st = ValidateUnloadModelRequest(*request); !st.ok()) return Refuse(ctx, st);
    auto* reactor = ctx->DefaultReactor();
    registry_->UnloadAsync(request->name(), drain_, Reply(reactor, response));
    return reactor;
  } catch (const std::exception& e) {
    return Unexpected(ctx, "UnloadModel", &e);
  } catch (...) {
    return Unexpected(ctx, "UnloadModel", nullptr);
  }
}

grpc::ServerUnaryReactor* ModelServiceImpl::RollbackModel(grpc::CallbackServerContext* ctx,
                                                          const lcd::v1::RollbackModelRequest* request,
                                                          lcd::v1::ModelStatus* response) {
  try {
    if (absl::Status st = Authorize(ctx, /*admin=*/true); !st.ok()) return Refuse(ctx, st);
    if (absl::Status st = ValidateRollbackModelRequest(*request); !st.ok()) return Refuse(ctx, st);
    if (!store_) return Refuse(ctx, absl::FailedPreconditionError("no artifact store (start with --artifact-root)"));
    absl::StatusOr<std::shared_ptr<ModelInstance>> current = registry_->Get(request->name());
    if (!current.ok()) return Refuse(ctx, current.status());
    int64_t serving = 0;
    if (!absl::SimpleAtoi((*current)->version, &serving) || serving < 1) {
      return Refuse(ctx, absl::FailedPreconditionError(absl::StrCat(
                             "'", request->name(), "' serves version ", (*current)->version,
                             ", not a version of the artifact store: nothing to roll back to")));
    }
    absl::StatusOr<std::vector<int64_t>> versions = PublishedVersions(store_->root, request->name());
    if (!versions.ok()) return Refuse(ctx, versions.status());
    int64_t previous = 0;
    for (int64_t v : *versions) {
      if (v < serving) previous = v;
    }
    if (previous == 0) {
      return Refuse(ctx, absl::FailedPreconditionError(absl::StrCat(
                             "no published version of '", request->name(), "' older than ", serving)));
    }
    return LoadFromStore(ctx, request->name(), previous, /*follow=*/false, response);
  } catch (const std::exception& e) {
    return Unexpected(ctx, "RollbackModel", &e);
  } catch (...) {
    return Unexpected(ctx, "RollbackModel", nullptr);
  }
}

grpc::ServerUnaryReactor* ModelServiceImpl::LoadFromStore(grpc::CallbackServerContext* ctx, const std::string& name,
                                                          int64_t version, bool follow,
                                                          lcd::v1::ModelStatus* response) {
  auto* reactor = ctx->DefaultReactor();
  const std::string dir = (std::filesystem::path(store_->root) / name / std::to_string(version)).string();
  // The policy is set before the load, so the watcher neither swaps a newer
  // version over a pinned one meanwhile nor reloads this one.
  if (store_->set_policy) store_->set_policy(name, version, follow);
  registry_->LoadAsync(name, dir, std::to_string(version), drain_, Reply(reactor, response),
                       ModelRegistry::PathOrigin::kServerChosen);
  return reactor;
}

}  // namespace lcd::server
