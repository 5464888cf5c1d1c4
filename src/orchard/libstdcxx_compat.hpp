// Force-included in every C++ file (CMakeLists.txt): keeps the binary within what GCC 11's
// libstdc++ (GLIBCXX_3.4.29) exports, so the worker bundle runs on Amazon Linux 2023 / EMR 7 with
// the host's libstdc++ (tools/bundle.sh checks it). The build compiles with g++-11, but links
// against the system's GCC 12 libstdc++.so.6, whose default version of one symbol is newer:
#pragma once
#if defined(__GNUC__) && defined(__x86_64__)
// std::condition_variable::wait(unique_lock<mutex>&): GLIBCXX_3.4.30 in GCC 12 (made a
// cancellation point, PR libstdc++/103382); the GLIBCXX_3.4.11 version behaves the same for us.
__asm__(".symver _ZNSt18condition_variable4waitERSt11unique_lockISt5mutexE,"
        "_ZNSt18condition_variable4waitERSt11unique_lockISt5mutexE@GLIBCXX_3.4.11");
#endif
