#include "calculator_service.hpp"

namespace calc {
namespace {

Value value(double v) {
  Value out;
  out.set_value(v);
  return out;
}

}  // namespace

amqprpc::Result<Value> CalculatorImpl::Add(const Operands& request, const amqprpc::Request&) {
  return value(request.a() + request.b());
}

amqprpc::Result<Value> CalculatorImpl::Subtract(const Operands& request, const amqprpc::Request&) {
  return value(request.a() - request.b());
}

amqprpc::Result<Value> CalculatorImpl::Multiply(const Operands& request, const amqprpc::Request&) {
  return value(request.a() * request.b());
}

amqprpc::Result<Value> CalculatorImpl::Divide(const Operands& request, const amqprpc::Request&) {
  if (request.b() == 0) {
    MathError why;
    why.set_operation("Divide");
    why.set_reason("division by zero");
    return amqprpc::error_with_detail(amqprpc::StatusCode::invalid_argument,
                                      "cannot divide by zero", why);
  }
  return value(request.a() / request.b());
}

}  // namespace calc
