// lcd.v1.ModelService on the gRPC callback API. ListModels and
// GetModelStatus answer inline from the registry; LoadModel, UnloadModel and
// RollbackModel take seconds, so they run on registry worker threads and finish the call
// from there (no gRPC thread waits on a load).
//
// Access: with an admin token, every call must carry the metadata
// "authorization: Bearer <token>" (UNAUTHENTICATED otherwise; compared in
// constant time). Without one, ListModels and GetModelStatus are open and
// LoadModel/UnloadModel are refused (PERMISSION_DENIED). Every request is
// validated (request_validation.h) before it reaches the registry, and no
// exception leaves a handler.
//
// Thread safety: shared by all calls; holds no per-call state.
#ifndef LCD_SERVER_MODEL_SERVICE_H_
#define LCD_SERVER_MODEL_SERVICE_H_

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <utility>

#include "absl/time/time.h"
#include "lcd/server/model_registry.h"
#include "lcd/v1/model.grpc.pb.h"

namespace lcd::server {

// The artifact store lcd-server follows (--artifact-root), as ModelService
// needs it for loads by version and rollbacks.
struct ArtifactStoreControl {
  std::string root;
  // After an explicit load of store version `version`: pin the model there
  // (follow = false) or follow versions newer than it (follow = true).
  std::function<void(const std::string& name, int64_t version, bool follow)> set_policy;
};

class ModelServiceImpl final : public lcd::v1::ModelService::CallbackService {
 public:
  // `registry` is not owned. `drain` bounds how long an old or unloaded
  // version may finish its requests. `admin_token` empty: administration off.
  // `store`: absent without --artifact-root (loads by version and rollbacks
  // are then FAILED_PRECONDITION).
  ModelServiceImpl(ModelRegistry* registry, absl::Duration drain, std::string admin_token = "",
                   std::optional<ArtifactStoreControl> store = std::nullopt)
      : registry_(registry), drain_(drain), admin_token_(std::move(admin_token)), store_(std::move(store)) {}

  grpc::ServerUnaryReactor* ListModels(grpc::CallbackServerContext* ctx,
                                       const lcd::v1::ListModelsRequest* request,
                                       lcd::v1::ListModelsResponse* response) override;
  grpc::ServerUnaryReactor* LoadModel(grpc::CallbackServerContext* ctx,
                                      const lcd::v1::LoadModelRequest* request,
                                      lcd::v1::ModelStatus* response) override;
  grpc::ServerUnaryReactor* UnloadModel(grpc::CallbackServerContext* ctx,
                                        const lcd::v1::UnloadModelRequest* request,
                                        lcd::v1::ModelStatus* response) override;
  grpc::ServerUnaryReactor* GetModelStatus(grpc::CallbackServerContext* ctx,
                                           const lcd::v1::GetModelStatusRequest* request,
                                           lcd::v1::ModelStatus* response) override;
  grpc::ServerUnaryReactor* RollbackModel(grpc::CallbackServerContext* ctx,
                                          const lcd::v1::RollbackModelRequest* request,
                                          lcd::v1::ModelStatus* response) override;

 private:
  absl::Status Authorize(grpc::CallbackServerContext* ctx, bool admin) const;
  // Loads store version `version` of `name` and sets its policy, finishing
  // the call from the registry worker.
  grpc::ServerUnaryReactor* LoadFromStore(grpc::CallbackServerContext* ctx, const std::string& name,
                                          int64_t version, bool follow, lcd::v1::ModelStatus* response);

  ModelRegistry* const registry_;
  const absl::Duration drain_;
  const std::string admin_token_;
  const std::optional<ArtifactStoreControl> store_;
};

// ModelStatusInfo -> proto (exposed for tests).
void ToProto(const ModelStatusInfo& info, lcd::v1::ModelStatus* out);

}  // namespace lcd::server

#endif  // LCD_SERVER_MODEL_SERVICE_H_
