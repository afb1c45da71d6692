// lcd.v1.ModelService on the gRPC callback API. ListModels and
// GetModelStatus answer inline from the registry; LoadModel and UnloadModel
// take seconds, so they run on registry worker threads and finish the call
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

#include <string>
#include <utility>

#include "absl/time/time.h"
#include "lcd/server/model_registry.h"
#include "lcd/v1/model.grpc.pb.h"

namespace lcd::server {

class ModelServiceImpl final : public lcd::v1::ModelService::CallbackService {
 public:
  // `registry` is not owned. `drain` bounds how long an old or unloaded
  // version may finish its requests. `admin_token` empty: administration off.
  ModelServiceImpl(ModelRegistry* registry, absl::Duration drain, std::string admin_token = "")
      : registry_(registry), drain_(drain), admin_token_(std::move(admin_token)) {}

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

 private:
  absl::Status Authorize(grpc::CallbackServerContext* ctx, bool admin) const;

  ModelRegistry* const registry_;
  const absl::Duration drain_;
  const std::string admin_token_;
};

// ModelStatusInfo -> proto (exposed for tests).
void ToProto(const ModelStatusInfo& info, lcd::v1::ModelStatus* out);

}  // namespace lcd::server

#endif  // LCD_SERVER_MODEL_SERVICE_H_
