/* A program from outside the project: static, no C library, only the
 * system calls the guest supports (and one it does not). */
static char greeting[] = "hello from C\n"; /* .data: private, writable */
static long zeros[3 * 512];                 /* .bss: 3 demand-zero pages */

static long sys(long n, long a, long b, long c)
{
    long r;
    __asm__ volatile("syscall"
                     : "=a"(r)
                     : "a"(n), "D"(a), "S"(b), "d"(c)
                     : "rcx", "r11", "memory");
    return r;
}

void c_main(void)
{
    long bad = 0;
    greeting[0] = 'H';
    for (int i = 0; i < 3 * 512; i += 512) {
        bad |= zeros[i];
        zeros[i] = i + 1;
    }
    if (sys(302, 0, 0, 0) != -38 || sys(302, 0, 0, 0) != -38)
        bad |= 2;
    sys(1, 1, (long)greeting, sizeof greeting - 1);
    for (unsigned long n = 1UL << 33; n; n--)
        __asm__ volatile("");
    sys(60, bad, 0, 0);
}

__asm__(".globl _start\n_start:\n\tmov %rsp, %rdi\n\tand $-16, %rsp\n\tcall c_main\n\thlt\n");
