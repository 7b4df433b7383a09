!> Example 04: WRF-style tiles run in OpenMP threads.
!>
!>   04_openmp_tiles MODEL.pt          (OMP_NUM_THREADS sets the thread count)
!>
!> WRF hands a physics driver 3-D fields in memory dimensioned (ims:ime, kms:kme,
!> jms:jme), halo included, and the tile to work on, its:ite, kts:kte, jts:jte;
!> tiles of one patch run in OpenMP threads at the same time. A handle holds the
!> inputs and outputs of one call, so every thread gets its own clone of the model
!> (clones share the weights, loaded once). The tile slice a(its:ite, kts:kte,
!> jts:jte) is given to the bridge as it is: no copy on the Fortran side.
!> Model: the "named" test model (T, q on 8 levels, ps -> heating, moistening, precip).
program openmp_tiles
  use, intrinsic :: iso_fortran_env, only: real32, error_unit
  use omp_lib, only: omp_get_max_threads, omp_get_thread_num
  use paramlib_bridge
  use example_support, only: stop_on_error, idealized_column, argument
  implicit none
  ! Domain in WRF's convention: mass points end at ide-1, jde-1, kde-1 (kme = kde).
  integer, parameter :: ids = 1, ide = 31, jds = 1, jde = 25, kds = 1, kde = 9
  integer, parameter :: halo = 3
  integer, parameter :: ims = ids - halo, ime = ide + halo, jms = jds - halo, jme = jde + halo
  integer, parameter :: kms = kds, kme = kde, kts = kds, kte = kde - 1
  real(real32), dimension(ims:ime, kms:kme, jms:jme) :: t, qv, rthcuten, rqvcuten, rth_one, rqv_one
  real(real32), dimension(ims:ime, jms:jme) :: psfc, pratec, pr_one
  type(paramlib_model) :: model
  type(paramlib_model), allocatable :: thread_model(:)
  integer, allocatable :: j_start(:), j_end(:), tile_status(:)
  character(len=:), allocatable :: model_file
  integer :: nthreads, num_tiles, ij, i, j, status

  if (command_argument_count() /= 1) then
    write (error_unit, '(a)') 'usage: 04_openmp_tiles MODEL.pt'
    error stop 2
  end if
  model_file = argument(1)
  ! The host's threads are the parallelism here: libtorch runs a call made inside a
  ! parallel region on the calling thread alone, so no paramlib_set_num_threads(1).
  call model%load(model_file, status)
  call stop_on_error(status, 'load')

  t = 0
  qv = 0
  psfc = 0
  do j = jds, jde - 1
    do i = ids, ide - 1
      call idealized_column(i + (j - 1) * (ide - ids), t(i, kts:kte, j), qv(i, kts:kte, j), psfc(i, j))
    end do
  end do

  ! One handle per thread, made before the parallel region.
  nthreads = omp_get_max_threads()
  allocate (thread_model(0:nthreads - 1))
  do i = 0, nthreads - 1
    call model%clone(thread_model(i), status)
    call stop_on_error(status, 'clone')
  end do

  ! Tiles split the j range, as WRF's numtiles does.
  num_tiles = 2 * nthreads
  allocate (j_start(num_tiles), j_end(num_tiles), tile_status(num_tiles))
  do ij = 1, num_tiles
    j_start(ij) = jds + (ij - 1) * (jde - jds) / num_tiles
    j_end(ij) = jds + ij * (jde - jds) / num_tiles - 1
  end do

  !$omp parallel do private(ij) schedule(dynamic)
  do ij = 1, num_tiles
    call ml_cumulus(thread_model(omp_get_thread_num()), t, qv, psfc, rthcuten, rqvcuten, pratec, &
                    ims, ime, kms, kme, jms, jme, ids, ide - 1, kts, kte, j_start(ij), j_end(ij), &
                    tile_status(ij))
  end do
  !$omp end parallel do
  do ij = 1, num_tiles  ! errors are reported outside the parallel region
    if (tile_status(ij) /= PARAMLIB_OK) then
      write (error_unit, '(a,i0,a,i0)') 'tile ', ij, ' failed with status ', tile_status(ij)
      error stop 1
    end if
  end do
  print '(a,i0,a,i0,a)', 'ran ', num_tiles, ' tiles on ', nthreads, ' threads'

  ! The same domain as a single tile on the original handle: the tiles must agree.
  call ml_cumulus(model, t, qv, psfc, rth_one, rqv_one, pr_one, ims, ime, kms, kme, jms, jme, &
                  ids, ide - 1, kts, kte, jds, jde - 1, status)
  call stop_on_error(status, 'single-tile call')
  print '(a,es10.3)', 'max |tiled - single tile| heating: ', &
    maxval(abs(rthcuten(ids:ide - 1, kts:kte, jds:jde - 1) - rth_one(ids:ide - 1, kts:kte, jds:jde - 1)))
  print '(a,es12.4,a)', 'domain-mean precipitation: ', &
    sum(pratec(ids:ide - 1, jds:jde - 1)) / ((ide - ids) * (jde - jds)), ' mm s-1'

  do i = 0, nthreads - 1
    call thread_model(i)%free(status)
  end do
  call model%free(status)

contains

  !> A cumulus driver with WRF's argument shape. It works on the tile only and
  !> returns the bridge's status for the host to act on.
  subroutine ml_cumulus(m, t, qv, psfc, rthcuten, rqvcuten, pratec, ims, ime, kms, kme, jms, jme, &
                        its, ite, kts, kte, jts, jte, status)
    type(paramlib_model), intent(in) :: m
    integer, intent(in) :: ims, ime, kms, kme, jms, jme, its, ite, kts, kte, jts, jte
    ! target: the bridge reads the tile in place until forward returns
    real(real32), intent(in), target :: t(ims:ime, kms:kme, jms:jme), qv(ims:ime, kms:kme, jms:jme)
    real(real32), intent(in) :: psfc(ims:ime, jms:jme)
    real(real32), intent(inout) :: rthcuten(ims:ime, kms:kme, jms:jme), rqvcuten(ims:ime, kms:kme, jms:jme)
    real(real32), intent(inout) :: pratec(ims:ime, jms:jme)
    integer, intent(out) :: status
    ! 2-D (i, j) fields go in and out as one-level (i, 1, j) tiles: one value per column.
    real(real32), target :: ps_tile(its:ite, 1, jts:jte)
    real(real32) :: pr_tile(its:ite, 1, jts:jte)

    ps_tile(:, 1, :) = psfc(its:ite, jts:jte)
    call m%set_input('T', t(its:ite, kts:kte, jts:jte), status, units='K')
    if (status /= PARAMLIB_OK) return
    call m%set_input('q', qv(its:ite, kts:kte, jts:jte), status, units='kg kg-1')
    if (status /= PARAMLIB_OK) return
    call m%set_input('ps', ps_tile, status, units='Pa')
    if (status /= PARAMLIB_OK) return
    call m%forward(status)
    if (status /= PARAMLIB_OK) return
    call m%get_output('heating', rthcuten(its:ite, kts:kte, jts:jte), status, units='K s-1')
    if (status /= PARAMLIB_OK) return
    call m%get_output('moistening', rqvcuten(its:ite, kts:kte, jts:jte), status, units='kg kg-1 s-1')
    if (status /= PARAMLIB_OK) return
    call m%get_output('precip', pr_tile, status, units='mm s-1')
    pratec(its:ite, jts:jte) = pr_tile(:, 1, :)
  end subroutine ml_cumulus

end program openmp_tiles
