#include "checkout.hpp"

#include <map>

namespace checkout {

void to_json(nlohmann::json& j, const Item& v) {
  j = {{"name", v.name}};
}
void from_json(const nlohmann::json& j, Item& v) {
  j.at("name").get_to(v.name);
}
void to_json(nlohmann::json& j, const Price& v) {
  j = {{"cents", v.cents}};
}
void from_json(const nlohmann::json& j, Price& v) {
  j.at("cents").get_to(v.cents);
}
void to_json(nlohmann::json& j, const Cart& v) {
  j = {{"items", v.items}};
}
void from_json(const nlohmann::json& j, Cart& v) {
  j.at("items").get_to(v.items);
}
void to_json(nlohmann::json& j, const Total& v) {
  j = {{"cents", v.cents}};
}
void from_json(const nlohmann::json& j, Total& v) {
  j.at("cents").get_to(v.cents);
}

amqprpc::Service prices_service(std::function<void(const amqprpc::Request&)> seen) {
  amqprpc::Service s(kPricesQueue, "shop.Prices");
  s.method<Item, Price>("Price",
                        [seen = std::move(seen)](
                            const Item& item, const amqprpc::Request& r) -> amqprpc::Result<Price> {
                          if (seen) seen(r);
                          static const std::map<std::string, long> kCatalogue = {
                              {"apple", 40}, {"bread", 250}, {"cheese", 675}};
                          auto it = kCatalogue.find(item.name);
                          if (it == kCatalogue.end()) {
                            return amqprpc::Status{amqprpc::StatusCode::not_found,
                                                   "no price for '" + item.name + "'"};
                          }
                          return Price{it->second};
                        });
  return s;
}

namespace {

// Totals a cart: one nested call per item, each on behalf of the caller. A coroutine: while it
// awaits a price it holds no thread. (Named variables in the co_await expressions: GCC 12.)
asio::awaitable<amqprpc::Result<Total>> total(amqprpc::Client& prices, const Cart& cart,
                                              const amqprpc::Request& request) {
  // The caller's deadline and cancellation, and a child span of this call's span.
  const amqprpc::CallOptions options = request.context.call_options();
  const std::string method = "Price";
  Total sum;
  for (const std::string& name : cart.items) {
    const Item item{name};
    amqprpc::Result<Price> price = co_await amqprpc::async_typed_call<Price>(
        prices, kPricesQueue, method, item, options, asio::use_awaitable);
    if (!price.ok()) co_return price.status();
    sum.cents += price->cents;
  }
  co_return sum;
}

}  // namespace

amqprpc::Service checkout_service(amqprpc::Client& prices, const asio::any_io_executor& executor,
                                  const std::string& refund_user) {
  amqprpc::Service s(kCheckoutQueue, "shop.Checkout");
  amqprpc::coroutine_method<Cart, Total>(
      s, "Total", executor, [&prices](const Cart& cart, const amqprpc::Request& request) {
        return total(prices, cart, request);
      });
  s.method<Total, Total>("Refund", [](const Total& t) { return t; });
  s.allow("Refund", {refund_user});  // the broker-verified caller (AMQP user_id)
  return s;
}

}  // namespace checkout
