!> A WRF-shaped host for the cumulus plugin: one domain's arrays in WRF's memory layout
!> (ims:ime, kms:kme, jms:jme) with halos, WRF's tile decomposition, the cumulus driver's tile
!> loop (OpenMP or serial) and advance_ppt's per-step NCA countdown. Shared by the test driver
!> (wrf_plugin_driver) and the benchmark (wrf_plugin_bench).
module wrf_domain
  use module_cu_paramlib, only: cu_paramlib
  implicit none
  private
  public :: domain, tile_set, new_domain, make_tiles, cumulus_step, advance_ppt, mark_halo, &
            halo_intact, tile_columns, keep_as_previous, HALO_MARK

  !> Value put outside the tile area (halo and the staggered end row ide, jde) of every array
  !> the plugin writes: it must still be there afterwards.
  real, parameter :: HALO_MARK = -999.0

  type :: domain
    integer :: ids, ide, jds, jde, kds, kde, ims, ime, jms, jme, kms, kme
    real :: dt = 0.0
    integer :: stepcu = 1
    real, allocatable, dimension(:, :, :) :: u, v, w, th, t, qv, p, pi, rho, dz8w, w0avg
    real, allocatable, dimension(:, :, :) :: rthcuten, rqvcuten, rqccuten, rqrcuten, rqicuten, &
      rqscuten
    real, allocatable, dimension(:, :, :) :: rthcuten_prev, rqvcuten_prev, rqccuten_prev, &
      rqrcuten_prev, rqicuten_prev, rqscuten_prev
    real, allocatable, dimension(:, :) :: hfx, ust, pblh, xland, raincv, pratec, nca, cutop, &
      cubot, nca_prev, rainc
    logical, allocatable :: cu_act_flag(:, :)
  end type domain

  !> Tiles as WRF's i_start/i_end/j_start/j_end: the last tiles end at ide, jde (the staggered
  !> end), so the scheme must cap them at ide-1, jde-1.
  type :: tile_set
    integer, allocatable :: i_start(:), i_end(:), j_start(:), j_end(:)
  end type tile_set

contains

  !> Domain of nx x ny mass columns and nz mass levels with a halo of `halo` points, every
  !> array zero.
  function new_domain(nx, ny, nz, halo, dt, stepcu) result(d)
    integer, intent(in) :: nx, ny, nz, halo, stepcu
    real, intent(in) :: dt
    type(domain) :: d
    d%ids = 1
    d%ide = nx + 1
    d%jds = 1
    d%jde = ny + 1
    d%kds = 1
    d%kde = nz + 1
    d%ims = d%ids - halo
    d%ime = d%ide + halo
    d%jms = d%jds - halo
    d%jme = d%jde + halo
    d%kms = d%kds
    d%kme = d%kde
    d%dt = dt
    d%stepcu = stepcu
    associate (i0 => d%ims, i1 => d%ime, k0 => d%kms, k1 => d%kme, j0 => d%jms, j1 => d%jme)
      allocate (d%u(i0:i1, k0:k1, j0:j1), source=0.0)
      allocate (d%v, d%w, d%th, d%t, d%qv, d%p, d%pi, d%rho, d%dz8w, d%w0avg, mold=d%u)
      allocate (d%rthcuten, d%rqvcuten, d%rqccuten, d%rqrcuten, d%rqicuten, d%rqscuten, mold=d%u)
      allocate (d%rthcuten_prev, d%rqvcuten_prev, d%rqccuten_prev, d%rqrcuten_prev, &
                d%rqicuten_prev, d%rqscuten_prev, mold=d%u)
      allocate (d%hfx(i0:i1, j0:j1), source=0.0)
      allocate (d%ust, d%pblh, d%xland, d%raincv, d%pratec, d%nca, d%cutop, d%cubot, d%nca_prev, &
                d%rainc, mold=d%hfx)
      allocate (d%cu_act_flag(i0:i1, j0:j1), source=.false.)
    end associate
    d%v = 0.0; d%w = 0.0; d%th = 0.0; d%t = 0.0; d%qv = 0.0; d%p = 0.0; d%pi = 0.0; d%rho = 0.0
    d%dz8w = 0.0; d%w0avg = 0.0
    call set_outputs(d, 0.0)
    d%ust = 0.0; d%pblh = 0.0; d%xland = 0.0; d%rainc = 0.0
  end function new_domain

  !> ntx x nty tiles over the domain, WRF-style (patch = domain here).
  function make_tiles(d, ntx, nty) result(tiles)
    type(domain), intent(in) :: d
    integer, intent(in) :: ntx, nty
    type(tile_set) :: tiles
    integer :: a, b, n
    allocate (tiles%i_start(ntx * nty), tiles%i_end(ntx * nty), tiles%j_start(ntx * nty), &
              tiles%j_end(ntx * nty))
    n = 0
    do b = 1, nty
      do a = 1, ntx
        n = n + 1
        tiles%i_start(n) = d%ids + (a - 1) * (d%ide - d%ids + 1) / ntx
        tiles%i_end(n) = d%ids + a * (d%ide - d%ids + 1) / ntx - 1
        tiles%j_start(n) = d%jds + (b - 1) * (d%jde - d%jds + 1) / nty
        tiles%j_end(n) = d%jds + b * (d%jde - d%jds + 1) / nty - 1
      end do
    end do
  end function make_tiles

  !> Mass columns of tile n once capped at ide-1, jde-1.
  integer function tile_columns(d, tiles, n)
    type(domain), intent(in) :: d
    type(tile_set), intent(in) :: tiles
    integer, intent(in) :: n
    tile_columns = max(min(tiles%i_end(n), d%ide - 1) - tiles%i_start(n) + 1, 0) * &
                   max(min(tiles%j_end(n), d%jde - 1) - tiles%j_start(n) + 1, 0)
  end function tile_columns

  !> The cumulus driver's tile loop at one cumulus step: tiles in OpenMP threads (parallel)
  !> or one after another.
  subroutine cumulus_step(d, tiles, itimestep, parallel)
    type(domain), intent(inout) :: d
    type(tile_set), intent(in) :: tiles
    integer, intent(in) :: itimestep
    logical, intent(in) :: parallel
    integer :: n
    if (parallel) then
      !$omp parallel do private(n) schedule(dynamic)
      do n = 1, size(tiles%i_start)
        call one_tile(d, tiles, n, itimestep)
      end do
      !$omp end parallel do
    else
      do n = 1, size(tiles%i_start)
        call one_tile(d, tiles, n, itimestep)
      end do
    end if
  end subroutine cumulus_step

  !> The CASE the patch kit adds to WRF's cumulus driver, with this domain's arrays.
  subroutine one_tile(d, tiles, n, itimestep)
    type(domain), intent(inout) :: d
    type(tile_set), intent(in) :: tiles
    integer, intent(in) :: n, itimestep
    call cu_paramlib(DT=d%dt, KTAU=itimestep, STEPCU=d%stepcu,                               &
                     U=d%u, V=d%v, W=d%w, TH=d%th, T=d%t, QV=d%qv, PCPS=d%p, PI=d%pi,        &
                     RHO=d%rho, DZ8W=d%dz8w, W0AVG=d%w0avg,                                  &
                     HFX=d%hfx, UST=d%ust, PBLH=d%pblh, XLAND=d%xland,                       &
                     RTHCUTEN=d%rthcuten, RQVCUTEN=d%rqvcuten, RQCCUTEN=d%rqccuten,          &
                     RQRCUTEN=d%rqrcuten, RAINCV=d%raincv, PRATEC=d%pratec, NCA=d%nca,       &
                     CUTOP=d%cutop, CUBOT=d%cubot, CU_ACT_FLAG=d%cu_act_flag,                &
                     RTHCUTEN_PREV=d%rthcuten_prev, RQVCUTEN_PREV=d%rqvcuten_prev,           &
                     RQCCUTEN_PREV=d%rqccuten_prev, RQRCUTEN_PREV=d%rqrcuten_prev,           &
                     NCA_PREV=d%nca_prev,                                                    &
                     IDS=d%ids, IDE=d%ide, JDS=d%jds, JDE=d%jde, KDS=d%kds, KDE=d%kde,       &
                     IMS=d%ims, IME=d%ime, JMS=d%jms, JME=d%jme, KMS=d%kms, KME=d%kme,       &
                     ITS=tiles%i_start(n), ITE=tiles%i_end(n), JTS=tiles%j_start(n),         &
                     JTE=tiles%j_end(n), KTS=d%kds, KTE=d%kde,                               &
                     RQICUTEN=d%rqicuten, RQSCUTEN=d%rqscuten, RQICUTEN_PREV=d%rqicuten_prev, &
                     RQSCUTEN_PREV=d%rqscuten_prev, F_QC=.true., F_QR=.true., F_QI=.true.,    &
                     F_QS=.true.)
  end subroutine one_tile

  !> The cumulus outputs now in the arrays as the scheme's copy of its previous call (*_PREV,
  !> NCA_PREV), as right after a call whose step wrote a history frame.
  subroutine keep_as_previous(d)
    type(domain), intent(inout) :: d
    d%rthcuten_prev = d%rthcuten
    d%rqvcuten_prev = d%rqvcuten
    d%rqccuten_prev = d%rqccuten
    d%rqrcuten_prev = d%rqrcuten
    d%rqicuten_prev = d%rqicuten
    d%rqscuten_prev = d%rqscuten
    d%nca_prev = d%nca
  end subroutine keep_as_previous

  !> WRF's end-of-step cumulus bookkeeping for MSKF-like schemes (advance_ppt): accumulate
  !> RAINC; where NCA > 0, zero the tendencies in the step where it runs out and count it down.
  subroutine advance_ppt(d)
    type(domain), intent(inout) :: d
    integer :: i, j
    do j = d%jds, d%jde - 1
      do i = d%ids, d%ide - 1
        d%rainc(i, j) = d%rainc(i, j) + d%pratec(i, j) * d%dt
        if (d%nca(i, j) > 0.0) then
          if (nint(d%nca(i, j) / d%dt) <= 1) then
            d%rthcuten(i, :d%kde - 1, j) = 0.0
            d%rqvcuten(i, :d%kde - 1, j) = 0.0
            d%rqccuten(i, :d%kde - 1, j) = 0.0
            d%rqrcuten(i, :d%kde - 1, j) = 0.0
            d%rqicuten(i, :d%kde - 1, j) = 0.0
            d%rqscuten(i, :d%kde - 1, j) = 0.0
          end if
          d%nca(i, j) = d%nca(i, j) - d%dt
        end if
      end do
    end do
  end subroutine advance_ppt

  !> Every array the plugin writes gets `value` where it must never write: outside
  !> ids..ide-1, jds..jde-1 (halo and staggered end) and at the top level kde.
  subroutine mark_halo(d, value)
    type(domain), intent(inout) :: d
    real, intent(in) :: value
    logical :: outside(d%ims:d%ime, d%jms:d%jme)
    integer :: k
    outside = area_mask(d)
    do k = d%kms, d%kme
      call mark3(d%w0avg, k)
      call mark3(d%rthcuten, k)
      call mark3(d%rqvcuten, k)
      call mark3(d%rqccuten, k)
      call mark3(d%rqrcuten, k)
      call mark3(d%rqicuten, k)
      call mark3(d%rqscuten, k)
      call mark3(d%rthcuten_prev, k)
      call mark3(d%rqvcuten_prev, k)
      call mark3(d%rqccuten_prev, k)
      call mark3(d%rqrcuten_prev, k)
      call mark3(d%rqicuten_prev, k)
      call mark3(d%rqscuten_prev, k)
    end do
    where (outside)
      d%raincv = value
      d%pratec = value
      d%nca = value
      d%cutop = value
      d%cubot = value
      d%nca_prev = value
    end where
  contains
    subroutine mark3(a, k)
      real, intent(inout) :: a(d%ims:, d%kms:, d%jms:)
      integer, intent(in) :: k
      if (k == d%kde) then
        a(:, k, :) = value
      else
        where (outside) a(:, k, :) = value
      end if
    end subroutine mark3
  end subroutine mark_halo

  !> Whether every value mark_halo set is still there.
  logical function halo_intact(d, value)
    type(domain), intent(in) :: d
    real, intent(in) :: value
    type(domain) :: marked
    marked = d
    call mark_halo(marked, value)
    halo_intact = same(marked%w0avg, d%w0avg) .and. same(marked%rthcuten, d%rthcuten) .and.  &
      same(marked%rqvcuten, d%rqvcuten) .and. same(marked%rqccuten, d%rqccuten) .and.          &
      same(marked%rqrcuten, d%rqrcuten) .and. same(marked%rqicuten, d%rqicuten) .and.          &
      same(marked%rqscuten, d%rqscuten) .and. same(marked%rthcuten_prev, d%rthcuten_prev) .and. &
      same(marked%rqvcuten_prev, d%rqvcuten_prev) .and. same(marked%rqccuten_prev, d%rqccuten_prev) &
      .and. same(marked%rqrcuten_prev, d%rqrcuten_prev) .and.                                    &
      same(marked%rqicuten_prev, d%rqicuten_prev) .and. same(marked%rqscuten_prev, d%rqscuten_prev) &
      .and. all(marked%nca_prev == d%nca_prev) .and. all(marked%raincv == d%raincv) .and.       &
      all(marked%pratec == d%pratec) .and. all(marked%nca == d%nca) .and.                       &
      all(marked%cutop == d%cutop) .and. all(marked%cubot == d%cubot)
  contains
    logical function same(a, b)
      real, intent(in) :: a(:, :, :), b(:, :, :)
      same = all(a == b)
    end function same
  end function halo_intact

  function area_mask(d) result(outside)
    type(domain), intent(in) :: d
    logical :: outside(d%ims:d%ime, d%jms:d%jme)
    outside = .true.
    outside(d%ids:d%ide - 1, d%jds:d%jde - 1) = .false.
  end function area_mask

  subroutine set_outputs(d, value)
    type(domain), intent(inout) :: d
    real, intent(in) :: value
    d%rthcuten = value; d%rqvcuten = value; d%rqccuten = value; d%rqrcuten = value
    d%rqicuten = value; d%rqscuten = value
    d%rthcuten_prev = value; d%rqvcuten_prev = value; d%rqccuten_prev = value
    d%rqrcuten_prev = value; d%rqicuten_prev = value; d%rqscuten_prev = value
    d%raincv = value; d%pratec = value; d%nca = value; d%cutop = value; d%cubot = value
    d%nca_prev = value
  end subroutine set_outputs

end module wrf_domain
