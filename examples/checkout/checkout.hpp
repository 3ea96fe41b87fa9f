// The checkout demo's services: shop.Prices prices one item; shop.Checkout totals a cart with a
// coroutine handler that awaits a nested call to shop.Prices per item, on behalf of its caller
// (the caller's deadline, cancellation and trace travel on), and has a Refund method only one
// user may call. Messages are JSON (nlohmann).
#pragma once

#include <amqprpc/asio.hpp>
#include <amqprpc/client.hpp>
#include <amqprpc/json.hpp>
#include <amqprpc/service.hpp>
#include <functional>
#include <string>
#include <vector>

namespace checkout {

inline const std::string kPricesQueue = "shop.prices";
inline const std::string kCheckoutQueue = "shop.checkout";

struct Item {
  std::string name;
};
struct Price {
  long cents = 0;
};
struct Cart {
  std::vector<std::string> items;
};
struct Total {
  long cents = 0;
};
void to_json(nlohmann::json& j, const Item& v);
void from_json(const nlohmann::json& j, Item& v);
void to_json(nlohmann::json& j, const Price& v);
void from_json(const nlohmann::json& j, Price& v);
void to_json(nlohmann::json& j, const Cart& v);
void from_json(const nlohmann::json& j, Cart& v);
void to_json(nlohmann::json& j, const Total& v);
void from_json(const nlohmann::json& j, Total& v);

// shop.Prices: Price(Item) -> Price; an unknown item is not_found. `seen` (may be empty) is
// told of every request it serves, for the demo to show what arrived.
amqprpc::Service prices_service(std::function<void(const amqprpc::Request&)> seen = {});

// shop.Checkout: Total(Cart) -> Total, a coroutine on `executor` calling shop.Prices through
// `prices`; Refund(Total) -> Total, allowed to `refund_user` only.
amqprpc::Service checkout_service(amqprpc::Client& prices, const asio::any_io_executor& executor,
                                  const std::string& refund_user);

}  // namespace checkout
