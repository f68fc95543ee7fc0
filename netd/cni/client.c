/*
 * netd's CNI plugin executable, compiled: the fast path of netd/cni/fast.py in C.
 *
 * Every container start execs the plugin (Podman: VERSION, then ADD), so its start-up is paid on
 * every ADD and DEL. A Python interpreter alone costs 10-15 ms on a 2-vCPU host; this program
 * costs about 1 ms. It does exactly what netd.cni.fast does for a well-formed call: answer
 * VERSION locally, or wrap the raw stdin config and the CNI_* variables in one HTTP request to
 * the daemon's Unix socket, and print the daemon's answer (200: the CNI result, 422: a CNI error
 * object) without parsing it. The daemon validates everything.
 *
 * Anything unusual is handed to the Python plugin (netd.cni.fast.handoff) by exec, with stdin
 * replayed from a memfd: a missing variable, stdin that is not an object, a "socket" key in the
 * config, an unsupported VERSION request, a daemon that cannot be reached (the errno is passed
 * on; nothing was sent) or an answer that is not a plain 200/422 (the raw answer is passed on, so
 * the request is never sent twice). Python composes every error message, so both clients report
 * errors identically.
 *
 * `netd cni install` compiles this file with -DNETD_PYTHON, -DNETD_ROOT and -DNETD_VERSIONS
 * (the interpreter, the directory holding the netd package, and the spec versions from
 * netd/cni/spec.py) so that there is one source of truth for each.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#if !defined(NETD_PYTHON) || !defined(NETD_ROOT) || !defined(NETD_VERSIONS)
#error "build with -DNETD_PYTHON=... -DNETD_ROOT=... -DNETD_VERSIONS=... (netd cni install does)"
#endif

#define DEFAULT_SOCKET "/run/netd/netd.sock"
#define TIMEOUT_SECONDS 60
#define MAX_ANSWER (64u * 1024u * 1024u)

static const char *const versions[] = {NETD_VERSIONS, NULL};

struct buf {
	char *data;
	size_t len, cap;
};

static void die_oom(void)
{
	/* Nothing sensible is left to do; the runtime sees a failed plugin with a message. */
	fputs("{\"cniVersion\":\"1.0.0\",\"code\":999,\"msg\":\"netd CNI plugin: out of memory\"}\n",
	      stdout);
	exit(1);
}

static void buf_put(struct buf *b, const char *data, size_t len)
{
	if (b->len + len + 1 > b->cap) {
		size_t cap = b->cap ? b->cap : 4096;
		while (cap < b->len + len + 1)
			cap *= 2;
		char *grown = realloc(b->data, cap);
		if (!grown)
			die_oom();
		b->data = grown;
		b->cap = cap;
	}
	memcpy(b->data + b->len, data, len);
	b->len += len;
	b->data[b->len] = '\0';
}

static void buf_str(struct buf *b, const char *s) { buf_put(b, s, strlen(s)); }

/* value as a JSON string literal (RFC 8259 section 7); other bytes pass through as they are. */
static void buf_json_string(struct buf *b, const char *value)
{
	char esc[8];
	buf_put(b, "\"", 1);
	for (const unsigned char *p = (const unsigned char *)value; *p; p++) {
		if (*p == '"' || *p == '\\') {
			esc[0] = '\\';
			esc[1] = (char)*p;
			buf_put(b, esc, 2);
		} else if (*p < 0x20) {
			snprintf(esc, sizeof esc, "\\u%04x", *p);
			buf_put(b, esc, 6);
		} else {
			buf_put(b, (const char *)p, 1);
		}
	}
	buf_put(b, "\"", 1);
}

static int read_all(int fd, struct buf *b, size_t limit)
{
	char chunk[65536];
	for (;;) {
		ssize_t n = read(fd, chunk, sizeof chunk);
		if (n == 0)
			return 0;
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		buf_put(b, chunk, (size_t)n);
		if (b->len > limit) {
			errno = EMSGSIZE;
			return -1;
		}
	}
}

static const char *env(const char *name)
{
	const char *value = getenv(name);
	return value ? value : "";
}

static int memfd_with(const char *name, const char *data, size_t len)
{
	int fd = memfd_create(name, 0);
	if (fd < 0)
		return -1;
	for (size_t done = 0; done < len;) {
		ssize_t n = write(fd, data + done, len - done);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			goto fail;
		}
		done += (size_t)n;
	}
	if (lseek(fd, 0, SEEK_SET) == 0)
		return fd;
fail:;
	int saved = errno;
	close(fd);
	errno = saved;
	return -1;
}

/* CNI error 5 (I/O) for a local failure: the message names what was being done. */
static void io_failure(const char *doing)
{
	printf("{\"cniVersion\":\"1.0.0\",\"code\":5,\"msg\":\"netd CNI plugin: %s: %s\"}\n",
	       doing, strerror(errno));
	exit(1);
}

/* Replace this process with the Python plugin; stdin replayed, the answer or errno passed on. */
static void handoff_to(const struct buf *in, const struct buf *answer, int error, const char *path)
{
	char number[32];
	int fd = memfd_with("netd-cni-stdin", in->data ? in->data : "", in->len);
	if (fd < 0 || dup2(fd, 0) < 0)
		io_failure("replaying stdin to the Python plugin");
	if (fd != 0)
		close(fd);
	if (answer) {
		/* Without it the Python path would send the request again: refuse instead. */
		int afd = memfd_with("netd-cni-answer", answer->data ? answer->data : "", answer->len);
		if (afd < 0)
			io_failure("passing the daemon's answer to the Python plugin");
		snprintf(number, sizeof number, "%d", afd);
		setenv("NETD_CNI_ANSWER_FD", number, 1);
	}
	if (error) {
		/* Python maps ETIMEDOUT to TimeoutError, which its message distinguishes. */
		snprintf(number, sizeof number, "%d", error == EAGAIN ? ETIMEDOUT : error);
		setenv("NETD_CNI_UNREACHABLE", number, 1);
		setenv("NETD_CNI_SOCKET", path, 1);
	}
	char *const argv[] = {"python3", "-I", "-S", "-c",
			      "import sys; sys.path.insert(0, " NETD_ROOT "); "
			      "from netd.cni.fast import handoff; handoff()",
			      NULL};
	execv(NETD_PYTHON, argv);
	printf("{\"cniVersion\":\"1.0.0\",\"code\":999,\"msg\":\"netd CNI plugin: cannot run %s: "
	       "%s\"}\n",
	       NETD_PYTHON, strerror(errno));
	exit(1);
}

static void handoff(const struct buf *in, const struct buf *answer, int error)
{
	handoff_to(in, answer, error, DEFAULT_SOCKET);
}

/* The string value of key when it occurs exactly once and holds no escape; else NULL. */
static char *string_value(const char *config, const char *key, char *value, size_t size)
{
	const char *at = strstr(config, key);
	if (!at || strstr(at + 1, key))
		return NULL;
	const char *p = at + strlen(key);
	while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
		p++;
	if (*p++ != ':')
		return NULL;
	while (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r')
		p++;
	if (*p++ != '"')
		return NULL;
	const char *end = strchr(p, '"');
	if (!end || (size_t)(end - p) >= size || memchr(p, '\\', (size_t)(end - p)))
		return NULL;
	memcpy(value, p, (size_t)(end - p));
	value[end - p] = '\0';
	return value;
}

static char *requested_version(const char *config)
{
	static char version[32];
	return string_value(config, "\"cniVersion\"", version, sizeof version);
}

static int version_answer(const char *config)
{
	const char *version = requested_version(config);
	int supported = 0;
	for (int i = 0; version && versions[i]; i++)
		supported |= strcmp(version, versions[i]) == 0;
	if (!supported)
		return -1;
	printf("{\"cniVersion\":\"%s\",\"supportedVersions\":[", version);
	for (int i = 0; versions[i]; i++)
		printf("%s\"%s\"", i ? "," : "", versions[i]);
	puts("]}");
	return 0;
}

static int is_space(char c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* Send the request and read the whole answer; 0, or -1 with errno (ECONNREFUSED etc.). */
static int exchange(const char *path, const struct buf *request, struct buf *answer)
{
	struct sockaddr_un addr = {.sun_family = AF_UNIX};
	if (strlen(path) >= sizeof addr.sun_path) {
		errno = ENAMETOOLONG;
		return -1;
	}
	strcpy(addr.sun_path, path);
	int sock = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (sock < 0)
		return -1;
	struct timeval timeout = {.tv_sec = TIMEOUT_SECONDS};
	setsockopt(sock, SOL_SOCKET, SO_RCVTIMEO, &timeout, sizeof timeout);
	setsockopt(sock, SOL_SOCKET, SO_SNDTIMEO, &timeout, sizeof timeout);
	if (connect(sock, (struct sockaddr *)&addr, sizeof addr) < 0)
		goto fail;
	for (size_t done = 0; done < request->len;) {
		ssize_t n = send(sock, request->data + done, request->len - done, MSG_NOSIGNAL);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			goto fail;
		}
		done += (size_t)n;
	}
	if (read_all(sock, answer, MAX_ANSWER) < 0)
		goto fail;
	close(sock);
	return 0;
fail:;
	int saved = errno;
	close(sock);
	errno = saved;
	return -1;
}

int main(void)
{
	struct buf in = {0}, body = {0}, request = {0}, answer = {0};
	const char *command = env("CNI_COMMAND");
	if (read_all(0, &in, MAX_ANSWER) < 0)
		handoff(&in, NULL, 0);
	buf_put(&in, "", 0); /* NUL-terminated even when empty */

	if (strcmp(command, "VERSION") == 0) {
		if (version_answer(in.data) == 0)
			return 0;
		handoff(&in, NULL, 0);
	}
	/* SPEC.md "Parameters": the variables each verb needs. */
	int needs_container = !strcmp(command, "ADD") || !strcmp(command, "CHECK");
	int known = needs_container || !strcmp(command, "DEL") || !strcmp(command, "GC") ||
		    !strcmp(command, "STATUS");
	if (!known || (needs_container && (!*env("CNI_CONTAINERID") || !*env("CNI_NETNS") ||
					    !*env("CNI_IFNAME"))) ||
	    (!strcmp(command, "DEL") && (!*env("CNI_CONTAINERID") || !*env("CNI_IFNAME"))))
		handoff(&in, NULL, 0);

	const char *config = in.data;
	size_t len = in.len;
	while (len && is_space(*config))
		config++, len--;
	while (len && is_space(config[len - 1]))
		len--;
	if (len < 2 || config[0] != '{' || config[len - 1] != '}' || memchr(config, 0, len))
		handoff(&in, NULL, 0);
	/* The conflist key "socket" (an absolute path) wins over NETD_SOCKET, as in plugin.py. */
	static char conf_socket[sizeof(((struct sockaddr_un *)0)->sun_path)];
	const char *path = *env("NETD_SOCKET") ? env("NETD_SOCKET") : DEFAULT_SOCKET;
	if (strstr(config, "\"socket\"")) {
		if (!string_value(config, "\"socket\"", conf_socket, sizeof conf_socket) ||
		    conf_socket[0] != '/')
			handoff(&in, NULL, 0);
		path = conf_socket;
	}

	static const char *const fields[][2] = {
	    {"command", "CNI_COMMAND"}, {"containerId", "CNI_CONTAINERID"},
	    {"netns", "CNI_NETNS"},     {"ifname", "CNI_IFNAME"},
	    {"args", "CNI_ARGS"},       {"path", "CNI_PATH"},
	};
	buf_str(&body, "{");
	for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
		if (i)
			buf_str(&body, ",");
		buf_json_string(&body, fields[i][0]);
		buf_str(&body, ":");
		buf_json_string(&body, env(fields[i][1]));
	}
	buf_str(&body, ",\"config\":");
	buf_put(&body, config, len);
	buf_str(&body, "}");
	char head[256];
	snprintf(head, sizeof head,
		 "POST /v1/cni HTTP/1.1\r\nHost: netd\r\nContent-Type: application/json\r\n"
		 "Content-Length: %zu\r\nConnection: close\r\n\r\n",
		 body.len);
	buf_str(&request, head);
	buf_put(&request, body.data, body.len);

	if (exchange(path, &request, &answer) < 0)
		handoff_to(&in, NULL, errno ? errno : EIO, path);
	buf_put(&answer, "", 0);

	char *end = strstr(answer.data, "\r\n\r\n");
	if (!end || answer.len < 12 || strncmp(answer.data, "HTTP/1.", 7) != 0)
		handoff(&in, &answer, 0);
	*end = '\0';
	int status = atoi(answer.data + 9);
	int chunked = strcasestr(answer.data, "chunked") != NULL;
	*end = '\r';
	if (chunked || (status != 200 && status != 422))
		handoff(&in, &answer, 0);

	char *result = end + 4;
	size_t result_len = answer.len - (size_t)(result - answer.data);
	while (result_len && is_space(*result))
		result++, result_len--;
	while (result_len && is_space(result[result_len - 1]))
		result_len--;
	/* 422 carries a CNI error object; 200 a result, except DEL/CHECK/GC/STATUS print nothing. */
	int empty = result_len == 0 || (result_len == 2 && !memcmp(result, "{}", 2)) ||
		    (result_len == 4 && !memcmp(result, "null", 4));
	if (status == 422 || !empty) {
		fwrite(result, 1, result_len, stdout);
		fputc('\n', stdout);
	}
	return status == 200 ? 0 : 1;
}
