// The calculator demo's server side: the generated base with every method implemented.
#pragma once

#include "calculator.amqprpc.h"

namespace calc {

class CalculatorImpl : public CalculatorService {
 public:
  amqprpc::Result<Value> Add(const Operands& request, const amqprpc::Request& context) override;
  amqprpc::Result<Value> Subtract(const Operands& request,
                                  const amqprpc::Request& context) override;
  amqprpc::Result<Value> Multiply(const Operands& request,
                                  const amqprpc::Request& context) override;
  // b == 0: invalid_argument with a MathError detail.
  amqprpc::Result<Value> Divide(const Operands& request, const amqprpc::Request& context) override;
};

}  // namespace calc
