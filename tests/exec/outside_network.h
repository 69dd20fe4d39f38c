// "The outside network" for tests of tools with network: true: a network namespace made by the
// test, joined to the host by a veth pair (198.18.N.1 on the host, 198.18.N.2 inside; 198.18/15
// is reserved for network tests), with a TCP server listening inside on 198.18.N.2. From the
// host it is a machine on another network: reachable by routing, not through loopback. The
// server runs on a thread of the test that entered the namespace (setns affects that thread
// only); it answers every connection with "outside\n".
//
// Needs root (CAP_NET_ADMIN) and iproute2; ok() is false otherwise, with why().
#pragma once

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <cstdlib>
#include <string>
#include <thread>

namespace cortex::testing {

class OutsideServer {
 public:
  OutsideServer() {
    if (::geteuid() != 0) {
      why_ = "needs root to make a network namespace";
      return;
    }
    static std::atomic<int> counter{0};
    int n = (::getpid() * 7 + counter++) % 250 + 1;
    name_ = "cortex-out-" + std::to_string(::getpid()) + "-" + std::to_string(n);
    host_if_ = "cxo" + std::to_string(::getpid() % 100000) + "h" + std::to_string(n);
    peer_if_ = "cxo" + std::to_string(::getpid() % 100000) + "p" + std::to_string(n);
    host_ip_ = "198.18." + std::to_string(n) + ".1";
    address_ = "198.18." + std::to_string(n) + ".2";
    std::string setup = "set -e; ip netns add " + name_ + "; ip link add " + host_if_ +
                        " type veth peer name " + peer_if_ + " netns " + name_ + "; ip addr add " +
                        host_ip_ + "/30 dev " + host_if_ + "; ip link set " + host_if_ +
                        " up; ip -n " + name_ + " addr add " + address_ + "/30 dev " + peer_if_ +
                        "; ip -n " + name_ + " link set " + peer_if_ + " up; ip -n " + name_ +
                        " link set lo up";
    if (std::system(("(" + setup + ") >/dev/null 2>&1").c_str()) != 0) {
      why_ = "cannot make the namespace with iproute2: " + setup;
      Cleanup();
      return;
    }
    int ns = ::open(("/run/netns/" + name_).c_str(), O_RDONLY | O_CLOEXEC);
    if (ns < 0) {
      why_ = "cannot open /run/netns/" + name_;
      return;
    }
    std::atomic<int> ready{0};  // 1: listening, -1: failed
    server_ = std::thread([this, ns, &ready] {
      int fd = -1;
      if (::setns(ns, CLONE_NEWNET) == 0) fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      ::close(ns);
      sockaddr_in addr{};
      addr.sin_family = AF_INET;
      ::inet_pton(AF_INET, address_.c_str(), &addr.sin_addr);
      socklen_t len = sizeof addr;
      if (fd < 0 || ::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
          ::listen(fd, 16) != 0 ||
          ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
        ready = -1;
        if (fd >= 0) ::close(fd);
        return;
      }
      port_ = ntohs(addr.sin_port);
      ready = 1;
      while (!stop_) {
        pollfd p{fd, POLLIN, 0};
        if (::poll(&p, 1, 50) <= 0) continue;
        int c = ::accept(fd, nullptr, nullptr);
        if (c < 0) continue;
        ++accepted_;
        (void)!::write(c, "outside\n", 8);
        ::close(c);
      }
      ::close(fd);
    });
    while (ready == 0) std::this_thread::yield();
    if (ready < 0) why_ = "cannot listen inside the namespace";
  }
  ~OutsideServer() {
    stop_ = true;
    if (server_.joinable()) server_.join();
    Cleanup();
  }
  OutsideServer(const OutsideServer&) = delete;
  OutsideServer& operator=(const OutsideServer&) = delete;

  bool ok() const { return why_.empty(); }
  const std::string& why() const { return why_; }
  const std::string& address() const { return address_; }  // the server's, 198.18.N.2
  int port() const { return port_; }
  int accepted() const { return accepted_; }

 private:
  void Cleanup() {
    if (name_.empty()) return;
    // The veth pair goes with the namespace.
    (void)std::system(("ip netns del " + name_ + " >/dev/null 2>&1").c_str());
    (void)std::system(("ip link del " + host_if_ + " >/dev/null 2>&1").c_str());
  }

  std::string name_, host_if_, peer_if_, host_ip_, address_, why_;
  std::thread server_;
  std::atomic<bool> stop_{false};
  std::atomic<int> accepted_{0};
  int port_ = 0;
};

// A listener on the host's loopback, as Cortex's API is.
class LoopbackListener {
 public:
  LoopbackListener() {
    fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof addr;
    if (fd_ >= 0 && ::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0 &&
        ::listen(fd_, 16) == 0 &&
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
      port_ = ntohs(addr.sin_port);
    }
  }
  ~LoopbackListener() {
    if (fd_ >= 0) ::close(fd_);
  }
  int port() const { return port_; }
  int Accepted() {  // connections accepted so far, counting those pending now
    for (int c; (c = ::accept(fd_, nullptr, nullptr)) >= 0;) {
      ::close(c);
      ++accepted_;
    }
    return accepted_;
  }

 private:
  int fd_ = -1, port_ = 0, accepted_ = 0;
};

}  // namespace cortex::testing
