/* The C reference of scripts/bench.py: the same syscalls and loads as vfioctl, in C, compiled
 * in the same run against the booted kernel's exported headers (make headers_install).
 *
 *   bench_ref pread   DEVFD OFFSET N              4-byte preads
 *   bench_ref load    DEVFD OFFSET SIZE N         4-byte loads from an mmap of the region
 *   bench_ref bulk    DEVFD OFFSET SIZE N         memcpy of SIZE bytes out of that mmap
 *   bench_ref map     ioas IOMMUFD IOAS_ID N      map + unmap of 4 KiB at a fixed IOVA
 *   bench_ref map     container FD N              (VFIO_IOMMU_MAP_DMA / UNMAP_DMA)
 *   bench_ref bigmap  ioas IOMMUFD IOAS_ID SIZE KIND N   map, then unmap, of SIZE bytes
 *   bench_ref bigmap  container FD SIZE KIND N           (KIND: 4k, thp, 2M)
 *   bench_ref open    cdev NODE N                 open + bind + IOAS + attach + close
 *   bench_ref open    group GROUPNODE BDF TYPE N  container + group + SET_IOMMU + device fd
 *
 * Prints one JSON object: {"ns": per-operation nanoseconds} ("map_ns"/"unmap_ns" for bigmap).
 * Every failure is a message on stderr and exit status 1.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>
#include <linux/vfio.h>
#if __has_include(<linux/iommufd.h>)
#include <linux/iommufd.h>
#define HAVE_IOMMUFD 1
#endif

#define IOVA (1ULL << 30)

static void die(const char *what)
{
	fprintf(stderr, "bench_ref: %s: %s\n", what, strerror(errno));
	exit(1);
}

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static long num(const char *s)
{
	return strtol(s, NULL, 0);
}

static void *region_mmap(int fd, long offset, long size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, offset);

	if (p == MAP_FAILED)
		die("mmap of the region");
	return p;
}

static void *buffer(long size, const char *kind)
{
	int flags = MAP_ANONYMOUS | (strcmp(kind, "thp") ? MAP_SHARED : MAP_PRIVATE);
	void *p;

	if (!strcmp(kind, "2M"))
		flags |= MAP_HUGETLB | (21 << MAP_HUGE_SHIFT);
	p = mmap(NULL, size, PROT_READ | PROT_WRITE, flags, -1, 0);
	if (p == MAP_FAILED)
		die("mmap of the buffer");
	if (!strcmp(kind, "thp") && madvise(p, size, MADV_HUGEPAGE))
		die("madvise");
	return p;
}

/* one map and one unmap of [va, va + size) at IOVA; returns 0 or -errno */
static int do_map(int container, int fd, uint32_t ioas, void *va, uint64_t size)
{
	if (container) {
		struct vfio_iommu_type1_dma_map m = {
			.argsz = sizeof(m), .vaddr = (uintptr_t)va, .iova = IOVA, .size = size,
			.flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
		};
		return ioctl(fd, VFIO_IOMMU_MAP_DMA, &m) ? -errno : 0;
	}
#ifdef HAVE_IOMMUFD
	struct iommu_ioas_map m = {
		.size = sizeof(m), .ioas_id = ioas, .user_va = (uintptr_t)va, .length = size,
		.iova = IOVA, .flags = IOMMU_IOAS_MAP_FIXED_IOVA | IOMMU_IOAS_MAP_READABLE |
				      IOMMU_IOAS_MAP_WRITEABLE,
	};
	return ioctl(fd, IOMMU_IOAS_MAP, &m) ? -errno : 0;
#else
	return -ENOSYS;
#endif
}

static int do_unmap(int container, int fd, uint32_t ioas, uint64_t size)
{
	if (container) {
		struct vfio_iommu_type1_dma_unmap u = { .argsz = sizeof(u), .iova = IOVA, .size = size };
		return ioctl(fd, VFIO_IOMMU_UNMAP_DMA, &u) ? -errno : 0;
	}
#ifdef HAVE_IOMMUFD
	struct iommu_ioas_unmap u = { .size = sizeof(u), .ioas_id = ioas, .iova = IOVA, .length = size };
	return ioctl(fd, IOMMU_IOAS_UNMAP, &u) ? -errno : 0;
#else
	return -ENOSYS;
#endif
}

static void open_cdev(const char *node)
{
#ifdef HAVE_IOMMUFD
	int dev = open(node, O_RDWR), iommufd = open("/dev/iommu", O_RDWR);
	struct vfio_device_bind_iommufd bind = { .argsz = sizeof(bind) };
	struct iommu_ioas_alloc alloc = { .size = sizeof(alloc) };
	struct vfio_device_attach_iommufd_pt attach = { .argsz = sizeof(attach) };

	if (dev < 0 || iommufd < 0)
		die("open");
	bind.iommufd = iommufd;
	if (ioctl(dev, VFIO_DEVICE_BIND_IOMMUFD, &bind))
		die("VFIO_DEVICE_BIND_IOMMUFD");
	if (ioctl(iommufd, IOMMU_IOAS_ALLOC, &alloc))
		die("IOMMU_IOAS_ALLOC");
	attach.pt_id = alloc.out_ioas_id;
	if (ioctl(dev, VFIO_DEVICE_ATTACH_IOMMUFD_PT, &attach))
		die("VFIO_DEVICE_ATTACH_IOMMUFD_PT");
	close(dev);
	close(iommufd);
#else
	(void)node;
	errno = ENOSYS;
	die("iommufd");
#endif
}

static void open_group(const char *group_node, const char *bdf, int type)
{
	int container = open("/dev/vfio/vfio", O_RDWR), group = open(group_node, O_RDWR), dev;

	if (container < 0 || group < 0)
		die("open");
	if (ioctl(group, VFIO_GROUP_SET_CONTAINER, &container))
		die("VFIO_GROUP_SET_CONTAINER");
	if (ioctl(container, VFIO_SET_IOMMU, type))
		die("VFIO_SET_IOMMU");
	dev = ioctl(group, VFIO_GROUP_GET_DEVICE_FD, bdf);
	if (dev < 0)
		die("VFIO_GROUP_GET_DEVICE_FD");
	close(dev);
	close(group);
	close(container);
}

int main(int argc, char **argv)
{
	const char *op = argc > 1 ? argv[1] : "";
	volatile uint32_t sink;
	double t;
	long n, i;

	if (!strcmp(op, "pread") && argc == 5) {
		int fd = num(argv[2]);
		long off = num(argv[3]);
		uint32_t v;

		n = num(argv[4]);
		t = now_ns();
		for (i = 0; i < n; i++)
			if (pread(fd, &v, 4, off) != 4)
				die("pread");
		t = now_ns() - t;
		sink = v;
	} else if (!strcmp(op, "load") && argc == 6) {
		volatile uint32_t *p = region_mmap(num(argv[2]), num(argv[3]), num(argv[4]));

		n = num(argv[5]);
		t = now_ns();
		for (i = 0; i < n; i++)
			sink = p[0];
		t = now_ns() - t;
	} else if (!strcmp(op, "bulk") && argc == 6) {
		long size = num(argv[4]);
		void *p = region_mmap(num(argv[2]), num(argv[3]), size), *dst = malloc(size);

		n = num(argv[5]);
		memset(dst, 0, size);
		t = now_ns();
		for (i = 0; i < n; i++)
			memcpy(dst, p, size);
		t = now_ns() - t;
		sink = ((volatile uint8_t *)dst)[0];
	} else if (!strcmp(op, "map") && (argc == 5 || argc == 6)) {
		int container = !strcmp(argv[2], "container"), fd = num(argv[3]);
		uint32_t ioas = container ? 0 : num(argv[4]);
		void *va = buffer(4096, "4k");

		n = num(argv[argc - 1]);
		t = now_ns();
		for (i = 0; i < n; i++) {
			errno = -do_map(container, fd, ioas, va, 4096);
			if (errno)
				die("map");
			errno = -do_unmap(container, fd, ioas, 4096);
			if (errno)
				die("unmap");
		}
		t = now_ns() - t;
	} else if (!strcmp(op, "bigmap") && (argc == 7 || argc == 8)) {
		int container = !strcmp(argv[2], "container"), fd = num(argv[3]);
		uint32_t ioas = container ? 0 : num(argv[4]);
		long size = num(argv[argc - 3]);
		void *va = buffer(size, argv[argc - 2]);
		double tm = 0, tu = 0, t0;

		memset(va, 0, size);  /* fault in, as vfioctl's buffers are before their first map */
		n = num(argv[argc - 1]);
		for (i = 0; i < n; i++) {
			t0 = now_ns();
			errno = -do_map(container, fd, ioas, va, size);
			if (errno)
				die("map");
			tm += now_ns() - t0;
			t0 = now_ns();
			errno = -do_unmap(container, fd, ioas, size);
			if (errno)
				die("unmap");
			tu += now_ns() - t0;
		}
		printf("{\"map_ns\": %.1f, \"unmap_ns\": %.1f}\n", tm / n, tu / n);
		return 0;
	} else if (!strcmp(op, "open") && argc == 5 && !strcmp(argv[2], "cdev")) {
		n = num(argv[4]);
		t = now_ns();
		for (i = 0; i < n; i++)
			open_cdev(argv[3]);
		t = now_ns() - t;
	} else if (!strcmp(op, "open") && argc == 7 && !strcmp(argv[2], "group")) {
		n = num(argv[6]);
		t = now_ns();
		for (i = 0; i < n; i++)
			open_group(argv[3], argv[4], num(argv[5]));
		t = now_ns() - t;
	} else {
		fprintf(stderr, "bench_ref: bad arguments (see the comment at the top of bench_ref.c)\n");
		return 2;
	}
	(void)sink;
	printf("{\"ns\": %.1f}\n", t / n);
	return 0;
}
