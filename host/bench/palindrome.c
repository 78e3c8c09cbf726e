/* The palindrome protocol as a classic fork+exec-per-connection program: tcpserver (from
 * Debian's ucspi-tcp) accepts each connection, forks, and execs this program with the
 * connection as its stdin and stdout, as inetd does. The peer the process-per-client model is
 * measured against for churn (`porthost bench --tcpserver`, examples/compare_forking.sh).
 *
 * Build: cc -O2 -o palindrome palindrome.c
 * Run:   tcpserver -1 -HRl0 127.0.0.1 0 ./palindrome
 *
 * Same answers as porthost's services: letters and digits only, compared ignoring case, in
 * UTF-8 (invalid bytes count as neither); an empty line ends the session; a line longer than
 * MAX_LINE bytes gets an ERR line and the end of the session. */
#include <locale.h>
#include <stdio.h>
#include <string.h>
#include <wchar.h>
#include <wctype.h>

#define MAX_LINE 65536

/* Static, not on the stack: a large stack frame costs page faults in every new process. */
static char line[MAX_LINE + 2];
static wchar_t letters[MAX_LINE];

static int is_palindrome(const char *text, size_t length) {
    size_t count = 0, at = 0;
    mbstate_t state;
    memset(&state, 0, sizeof state);
    while (at < length) {
        wchar_t c;
        size_t used = mbrtowc(&c, text + at, length - at, &state);
        if (used == (size_t)-1 || used == (size_t)-2) {
            /* Not UTF-8: skip the byte, as a replacement character would be skipped. */
            memset(&state, 0, sizeof state);
            at++;
            continue;
        }
        if (used == 0) /* a NUL byte */
            used = 1;
        if (iswalnum((wint_t)c))
            letters[count++] = (wchar_t)towlower((wint_t)c);
        at += used;
    }
    for (size_t front = 0, back = count; front + 1 < back; front++, back--)
        if (letters[front] != letters[back - 1])
            return 0;
    return 1;
}

int main(void) {
    setlocale(LC_CTYPE, "C.UTF-8");
    while (fgets(line, sizeof line, stdin)) {
        size_t length = strlen(line);
        if (length > 0 && line[length - 1] == '\n') {
            length--;
        } else if (length > MAX_LINE) {
            printf("ERR line longer than %d bytes\n", MAX_LINE);
            return 1;
        }
        if (length > 0 && line[length - 1] == '\r')
            length--;
        if (length == 0)
            break;
        fputs(is_palindrome(line, length) ? "1\n" : "\n", stdout);
        fflush(stdout);
    }
    return 0;
}
