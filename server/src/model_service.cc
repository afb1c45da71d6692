#include "lcd/server/model_service.h"

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

}  // namespace

void ToProto(const ModelStatusInfo& info, lcd::v1::ModelStatus* out) {
  out->set_name(info.name);
  out->set_state(ToProtoState(info.state));
  out->set_version(info.version);
  out->set_source_path(info.path);
  out->mutable_quantization()->set_method(info.quant_method);
  out->mutable_quantization()->set_bits(info.quant_bits);
  out->mutable_quantization()->set_group_size(info.quant_group_size);
  out->set_memory_bytes(info.memory_bytes);
  out->set_error(info.error);
  out->set_requests_running(info.running);
  out->set_requests_waiting(info.waiting);
}

grpc::ServerUnaryReactor* ModelServiceImpl::ListModels(grpc::CallbackServerContext* ctx,
                                                       const lcd::v1::ListModelsRequest*,
                                                       lcd::v1::ListModelsResponse* response) {
  for (const ModelStatusInfo& info : registry_->List()) ToProto(info, response->add_models());
  auto* reactor = ctx->DefaultReactor();
  reactor->Finish(grpc::Status::OK);
  return reactor;
}

grpc::ServerUnaryReactor* ModelServiceImpl::GetModelStatus(
    grpc::CallbackServerContext* ctx, const lcd::v1::GetModelStatusRequest* request,
    lcd::v1::ModelStatus* response) {
  auto* reactor = ctx->DefaultReactor();
  auto info = registry_->Status(request->name());
  if (info.ok()) ToProto(*info, response);
  reactor->Finish(ToGrpcStatus(info.status()));
  return reactor;
}

grpc::ServerUnaryReactor* ModelServiceImpl::LoadModel(grpc::CallbackServerContext* ctx,
                                                      const lcd::v1::LoadModelRequest* request,
                                                      lcd::v1::ModelStatus* response) {
  auto* reactor = ctx->DefaultReactor();
  // `response` and `reactor` stay valid until Finish, which only the worker calls.
  registry_->LoadAsync(request->name(), request->path(), request->version(), drain_,
                       [reactor, response](absl::Status st, ModelStatusInfo info) {
                         ToProto(info, response);
                         reactor->Finish(ToGrpcStatus(st));
                       });
  return reactor;
}

grpc::ServerUnaryReactor* ModelServiceImpl::UnloadModel(grpc::CallbackServerContext* ctx,
                                                        const lcd::v1::UnloadModelRequest* request,
                                                        lcd::v1::ModelStatus* response) {
  auto* reactor = ctx->DefaultReactor();
  registry_->UnloadAsync(request->name(), drain_,
                         [reactor, response](absl::Status st, ModelStatusInfo info) {
                           ToProto(info, response);
                           reactor->Finish(ToGrpcStatus(st));
                         });
  return reactor;
}

}  // namespace lcd::server
